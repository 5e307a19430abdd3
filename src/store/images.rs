//! Images: their files' paths and digests, and command lines.

use super::{Db, StoreError};
use crate::model::*;
use rusqlite::{OptionalExtension, params};

pub fn get_image(conn: &Db, name: &str) -> Result<Option<Image>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT name, kernel_path, kernel_sha256, initrd_path, initrd_sha256, cmdline
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
    })
}

pub fn list_images(conn: &Db) -> Result<Vec<Image>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, kernel_path, kernel_sha256, initrd_path, initrd_sha256, cmdline
         FROM images ORDER BY name",
    )?;
    let rows = stmt.query_map([], image_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds an image, or replaces the files of one with the same name.
pub fn put_image(conn: &Db, image: &Image, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO images (name, kernel_path, kernel_sha256, initrd_path, initrd_sha256, cmdline, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(name) DO UPDATE SET kernel_path = excluded.kernel_path,
           kernel_sha256 = excluded.kernel_sha256, initrd_path = excluded.initrd_path,
           initrd_sha256 = excluded.initrd_sha256, cmdline = excluded.cmdline",
        params![
            image.name,
            image.kernel_path,
            image.kernel_sha256,
            image.initrd_path,
            image.initrd_sha256,
            image.cmdline,
            now_ms
        ],
    )?;
    Ok(())
}
