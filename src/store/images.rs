//! Images: their files' paths and digests, and command lines.

use super::{Db, StoreError};
use crate::model::*;
use rusqlite::{OptionalExtension, params};

pub fn get_image(conn: &Db, name: &str) -> Result<Option<Image>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT name, kernel_path, kernel_sha256, initrd_path, initrd_sha256, cmdline, arches
             FROM images WHERE name = ?1",
        )?
        .query_row([name], image_row)
        .optional()?)
}

fn image_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Image> {
    Ok(Image {
        name: r.get(0)?,
        kernel_path: r.get(1)?,
        kernel_sha256: r.get(2)?,
        initrd_path: r.get(3)?,
        initrd_sha256: r.get(4)?,
        cmdline: r.get(5)?,
        // Written by `put_image` only; an unknown name reads as the amd64 default
        // rather than failing every image list.
        arches: crate::lifecycle::parse_arches(&r.get::<_, String>(6)?)
            .unwrap_or_else(|_| vec![crate::lifecycle::Arch::Amd64]),
    })
}

pub fn list_images(conn: &Db) -> Result<Vec<Image>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, kernel_path, kernel_sha256, initrd_path, initrd_sha256, cmdline, arches
         FROM images ORDER BY name",
    )?;
    let rows = stmt.query_map([], image_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds an image, or replaces the files of one with the same name.
pub fn put_image(conn: &Db, image: &Image, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO images (name, kernel_path, kernel_sha256, initrd_path, initrd_sha256, cmdline, created_ms, arches)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(name) DO UPDATE SET kernel_path = excluded.kernel_path,
           kernel_sha256 = excluded.kernel_sha256, initrd_path = excluded.initrd_path,
           initrd_sha256 = excluded.initrd_sha256, cmdline = excluded.cmdline,
           arches = excluded.arches",
        params![
            image.name,
            image.kernel_path,
            image.kernel_sha256,
            image.initrd_path,
            image.initrd_sha256,
            image.cmdline,
            now_ms,
            crate::lifecycle::arches_text(&image.arches)
        ],
    )?;
    Ok(())
}

/// Records where a catalog image came from (replacing what was recorded before).
pub fn put_image_source(conn: &Db, source: &ImageSource) -> Result<(), StoreError> {
    let vars = serde_json::to_string(&source.vars).unwrap_or_else(|_| "{}".into());
    conn.execute(
        "INSERT INTO image_sources (name, definition, verified_by, provenance, vars, fetched_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(name) DO UPDATE SET definition = excluded.definition,
           verified_by = excluded.verified_by, provenance = excluded.provenance,
           vars = excluded.vars, fetched_ms = excluded.fetched_ms",
        params![
            source.name,
            source.definition,
            source.verified_by,
            source.provenance,
            vars,
            source.fetched_ms
        ],
    )?;
    Ok(())
}

/// An image whose files were replaced by hand is no longer what its chain verified.
pub fn delete_image_source(conn: &Db, name: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM image_sources WHERE name = ?1", [name])?;
    Ok(())
}

fn source_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageSource> {
    let vars: String = r.get(4)?;
    Ok(ImageSource {
        name: r.get(0)?,
        definition: r.get(1)?,
        verified_by: r.get(2)?,
        provenance: r.get(3)?,
        // Written by put_image_source only; an unreadable value means no values.
        vars: serde_json::from_str(&vars).unwrap_or_default(),
        fetched_ms: r.get(5)?,
    })
}

pub fn get_image_source(conn: &Db, name: &str) -> Result<Option<ImageSource>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT name, definition, verified_by, provenance, vars, fetched_ms
             FROM image_sources WHERE name = ?1",
        )?
        .query_row([name], source_row)
        .optional()?)
}

pub fn list_image_sources(conn: &Db) -> Result<Vec<ImageSource>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, definition, verified_by, provenance, vars, fetched_ms
         FROM image_sources ORDER BY name",
    )?;
    let rows = stmt.query_map([], source_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest signed date seen for `key` (signer and signed file).
pub fn release_stamp(conn: &Db, key: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT date FROM release_stamps WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// Raises the stamp of `key` to `date` (never lowers it).
pub fn put_release_stamp(conn: &Db, key: &str, date: i64, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO release_stamps (key, date, seen_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET date = max(date, excluded.date), seen_ms = excluded.seen_ms",
        params![key, date, now_ms],
    )?;
    Ok(())
}
