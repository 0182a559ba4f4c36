//! Module images: signed kinds that are not built in, and the devices
//! that installed them. An installed kind becomes a `module_kind` row the
//! first time an image of it is recorded, so modules can name it.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{CibError, Result};
use crate::types::{Image, ImageInstall, Timestamp};
use crate::{device_row, record_history, Cib};

fn image_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Image> {
    Ok(Image {
        sha256: r.get(0)?,
        kind: r.get(1)?,
        target: r.get(2)?,
        size: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        signer: r.get(4)?,
        built_at: r.get(5)?,
        path: r.get(6)?,
        recorded_at: Timestamp(r.get(7)?),
        signature: r.get(8)?,
    })
}

const IMAGE_COLUMNS: &str =
    "sha256, kind, target, size, signer, built_at, path, recorded_at, signature";

/// The kinds of every recorded image.
pub(crate) fn image_kinds(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT DISTINCT kind FROM image ORDER BY kind")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether `device` has a recorded install of an image of `kind`.
pub(crate) fn installed_on(conn: &Connection, device: &str, kind: &str) -> Result<bool> {
    let row = device_row(conn, device)?;
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM image_install i JOIN image g ON g.sha256 = i.sha256
          WHERE i.device_id = ?1 AND g.kind = ?2)",
        params![row, kind],
        |r| r.get(0),
    )?)
}

/// A module that names `sha256` as its image must be of that image's kind,
/// and the image must be recorded.
pub(crate) fn check_module_image(conn: &Connection, sha256: &str, kind: &str) -> Result<()> {
    let recorded: Option<String> = conn
        .query_row("SELECT kind FROM image WHERE sha256 = ?1", [sha256], |r| {
            r.get(0)
        })
        .optional()?;
    match recorded {
        None => Err(CibError::invalid(
            "image",
            format!("{sha256} is not a recorded image (l45-nco images build or push records it)"),
        )),
        Some(k) if k != kind => Err(CibError::invalid(
            "image",
            format!("{sha256} is an image of kind {k}, not {kind}"),
        )),
        Some(_) => Ok(()),
    }
}

impl Cib {
    /// Records an image (again: its path and time are updated) and makes
    /// its kind known.
    pub fn record_image(&mut self, image: &Image) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO image (sha256, kind, target, size, signer, built_at, path, recorded_at,
                     signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (sha256) DO UPDATE SET path = excluded.path,
                     recorded_at = excluded.recorded_at,
                     signature = coalesce(excluded.signature, image.signature)",
                params![
                    image.sha256,
                    image.kind,
                    image.target,
                    i64::try_from(image.size).unwrap_or(i64::MAX),
                    image.signer,
                    image.built_at,
                    image.path,
                    image.recorded_at.0,
                    image.signature
                ],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO module_kind (name, description) VALUES (?1, ?2)",
                params![image.kind, "installed image (l45-nco images)"],
            )?;
            record_history(
                tx,
                image.recorded_at,
                None,
                None,
                "image-recorded",
                &format!(
                    "{} kind {} target {} signer {}",
                    image.sha256, image.kind, image.target, image.signer
                ),
            )
        })
    }

    /// Records that `device` accepted image `sha256`.
    pub fn record_image_install(&mut self, device: &str, sha256: &str) -> Result<()> {
        let now = Timestamp::now();
        self.write(|tx| {
            let row = device_row(tx, device)?;
            tx.execute(
                "INSERT INTO image_install (device_id, sha256, installed_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (device_id, sha256) DO UPDATE SET installed_at = excluded.installed_at",
                params![row, sha256, now.0],
            )?;
            record_history(tx, now, Some(device), None, "image-installed", sha256)
        })
    }

    /// Every recorded image, newest first.
    pub fn images(&self) -> Result<Vec<Image>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {IMAGE_COLUMNS} FROM image ORDER BY recorded_at DESC, sha256"
        ))?;
        let rows = stmt.query_map([], image_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn image(&self, sha256: &str) -> Result<Option<Image>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {IMAGE_COLUMNS} FROM image WHERE sha256 = ?1"),
                [sha256],
                image_row,
            )
            .optional()?)
    }

    /// Every recorded install (device, image), by device.
    pub fn image_installs(&self) -> Result<Vec<ImageInstall>> {
        let mut stmt = self.conn.prepare(
            "SELECT d.name, i.sha256, i.installed_at FROM image_install i
               JOIN device d ON d.id = i.device_id ORDER BY d.name, i.sha256",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ImageInstall {
                device: r.get(0)?,
                sha256: r.get(1)?,
                installed_at: Timestamp(r.get(2)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether the CIB records that `device` holds image `sha256`.
    pub fn has_image_install(&self, device: &str, sha256: &str) -> Result<bool> {
        let row = device_row(&self.conn, device)?;
        Ok(self.conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM image_install WHERE device_id = ?1 AND sha256 = ?2)",
            params![row, sha256],
            |r| r.get(0),
        )?)
    }

    /// Records that `device` no longer holds image `sha256` (its
    /// `remove-image` succeeded, or it answered that it has no such image).
    /// Returns whether the CIB had recorded the install.
    pub fn remove_image_install(&mut self, device: &str, sha256: &str) -> Result<bool> {
        let now = Timestamp::now();
        self.write(|tx| {
            let row = device_row(tx, device)?;
            let n = tx.execute(
                "DELETE FROM image_install WHERE device_id = ?1 AND sha256 = ?2",
                params![row, sha256],
            )?;
            record_history(tx, now, Some(device), None, "image-removed", sha256)?;
            Ok(n > 0)
        })
    }

    /// The recorded images of `kind`, newest first.
    pub fn images_of_kind(&self, kind: &str) -> Result<Vec<Image>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {IMAGE_COLUMNS} FROM image WHERE kind = ?1 ORDER BY recorded_at DESC, sha256"
        ))?;
        let rows = stmt.query_map([kind], image_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
