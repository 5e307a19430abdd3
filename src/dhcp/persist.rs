//! What the DHCP server needs from a database, and nothing more: the seam between the
//! socket loop and the engine behind it.
//!
//! The server asks for three things: the lease table (to build the lease book at start
//! and to rebuild it after a failed commit), the inventory snapshot when it changed, and
//! the commit of one group of decisions. `Store` (SQLite on its own thread) implements
//! it here; a test implements it with a fake whose commits fail or wait on command; a
//! second engine (PostgreSQL, whose clients are async) implements it beside `Store`.
//!
//! Every method returns a boxed future that owns what it needs (`'static`): the server
//! keeps the commit future in its loop while it goes on receiving and deciding, so the
//! future cannot borrow the server, and an async engine's future runs on the DHCP
//! thread's own runtime just as `Store`'s oneshot reply does. The box is the one the
//! loop already paid for per commit; the inventory check between commits is bounded
//! by `INVENTORY_RECHECK` in the server, so no box is allocated per packet. Boxed
//! rather than `async fn` in the trait so the server can hold `Box<dyn DhcpPersistence>`
//! and `serve` can pick the engine from the configuration at run time.
//!
//! The group commit is the contract an engine must keep: `commit` writes the whole
//! `DhcpBatch` in one transaction and resolves only once it is durable, because the
//! server sends the group's acknowledgements when it resolves and drops them when it
//! fails. The server never starts a second commit before the first has resolved.

use crate::store::{self, DhcpBatch, InventorySnapshot, LeaseRecord, Store, StoreError};
use std::future::Future;
use std::pin::Pin;

/// A persistence call in flight: owns its inputs, so it outlives the borrow that
/// started it.
pub type PersistFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// The result of committing one group.
#[derive(Debug)]
pub struct CommitOutcome {
    /// The inventory generation right after the commit.
    pub generation: i64,
    /// A fresh inventory when someone other than this batch changed it since the
    /// generation the server knew; `None` when the server's cached inventory (with the
    /// batch's discovered machines, which it added itself) is still the database's.
    pub snapshot: Option<InventorySnapshot>,
}

/// The DHCP server's persistence. `Send` because the server runs on a thread of its
/// own and takes it there.
pub trait DhcpPersistence: Send + 'static {
    /// Every row of the lease table: what [`LeaseBook::load`](crate::dhcp::leases::LeaseBook::load) builds the book from.
    fn leases(&self) -> PersistFuture<Vec<LeaseRecord>>;

    /// A fresh inventory snapshot when its generation is not `known` (`None`: always).
    fn inventory_if_changed(&self, known: Option<i64>) -> PersistFuture<Option<InventorySnapshot>>;

    /// Commits one group in one transaction (see the module doc). `known` is the
    /// inventory generation of the server's cached snapshot, `now_ms` the time the
    /// group was decided (the rows' `updated_ms`).
    fn commit(&self, batch: DhcpBatch, now_ms: i64, known: i64) -> PersistFuture<CommitOutcome>;
}

impl DhcpPersistence for Store {
    fn leases(&self) -> PersistFuture<Vec<LeaseRecord>> {
        let store = self.clone();
        Box::pin(async move { store.call(|conn| store::list_leases(conn)).await })
    }

    fn inventory_if_changed(&self, known: Option<i64>) -> PersistFuture<Option<InventorySnapshot>> {
        let store = self.clone();
        Box::pin(async move {
            store
                .call(move |conn| store::inventory_if_changed(conn, known))
                .await
        })
    }

    fn commit(&self, batch: DhcpBatch, now_ms: i64, known: i64) -> PersistFuture<CommitOutcome> {
        let store = self.clone();
        Box::pin(async move {
            // One job on the database thread: the commit and the inventory check run
            // back to back, so no other writer's change can fall between them unseen.
            store
                .call(move |conn| {
                    let (before, after) = store::commit_dhcp_batch(conn, &batch, now_ms)?;
                    // Our own discovered machines moved the generation and are in the
                    // snapshot already; anyone else's change means a reload.
                    let expected = if before == known { after } else { i64::MIN };
                    let snapshot = store::inventory_if_changed(conn, Some(expected))?;
                    Ok(CommitOutcome {
                        generation: after,
                        snapshot,
                    })
                })
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    //! `Store` against the contract the server relies on; a second engine's tests can
    //! follow the same steps.
    use super::*;
    use crate::mac::MacAddr;
    use crate::service::machines::{NewMachine, add_in};
    use crate::store::{Discovered, LeaseOp, LeaseState};
    use std::net::Ipv4Addr;

    const NOW_MS: i64 = 1_700_000_000_000;

    fn lease(mac: MacAddr) -> LeaseRecord {
        LeaseRecord {
            ip: Ipv4Addr::new(192, 0, 2, 10),
            mac,
            expires_at: NOW_MS / 1000 + 3600,
            state: LeaseState::Bound,
            hostname: None,
            client_id: None,
        }
    }

    #[tokio::test]
    async fn store_commits_a_group_and_reports_only_other_writers_inventory_changes() {
        let store = Store::open_in_memory().expect("opens");
        let first = store
            .inventory_if_changed(None)
            .await
            .expect("reads")
            .expect("unknown generation: always a snapshot");
        let unchanged = store.inventory_if_changed(Some(first.generation)).await;
        assert!(unchanged.expect("reads").is_none());

        // The group discovers a machine: the generation moves, but the server put that
        // machine in its snapshot itself, so there is nothing to reload.
        let found = MacAddr([2, 0, 0, 0, 0, 1]);
        let batch = DhcpBatch {
            leases: vec![LeaseOp::Put(lease(found))],
            discovered: vec![Discovered {
                mac: found,
                arch: None,
                vendor_class: None,
            }],
            ..DhcpBatch::default()
        };
        let own = store
            .commit(batch, NOW_MS, first.generation)
            .await
            .expect("commits");
        assert_ne!(own.generation, first.generation);
        assert!(own.snapshot.is_none());
        assert_eq!(store.leases().await.expect("reads"), vec![lease(found)]);

        // Someone else (the CLI, the panel) adds a machine: the next commit brings it.
        let added = MacAddr([2, 0, 0, 0, 0, 2]);
        store
            .transaction(move |tx| {
                add_in(
                    tx,
                    &NewMachine::new(added),
                    &Default::default(),
                    &[],
                    "test",
                    NOW_MS,
                )
            })
            .await
            .expect("adds");
        let next = store
            .commit(DhcpBatch::default(), NOW_MS, own.generation)
            .await
            .expect("commits");
        let snapshot = next.snapshot.expect("another writer's change is reported");
        assert_eq!(snapshot.generation, next.generation);
        assert!(snapshot.machines.contains_key(&added));
        assert!(snapshot.machines.contains_key(&found));
    }
}
