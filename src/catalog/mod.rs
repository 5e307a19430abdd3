//! The image catalog: definitions of real operating systems (`images/*.toml`, built
//! in, overridable in `data_dir/images/`), the formats their trust chains are written
//! in, and the verified fetch that registers nothing until the whole chain holds.
//!
//! Codecs (pure, bounded, no I/O of their own) sit beside the definitions; the fetch,
//! which does the downloading, sits above the store.

pub mod openpgp;
