//! Verified reads: every object is checked against its name, every blob
//! authenticated and checked against its id before anyone sees it.

use std::io;
use std::sync::atomic::Ordering;

use super::index_sync::{may_be_stale_cache, Rebuild};
use super::{Refused, Repository};
use crate::backend::{object_name, ObjectKind};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::id::{BlobId, Id};
use crate::index::BlobLocation;
use crate::object::blob::{self, BlobType};
use crate::object::pack::{
    open_trailer, trailer_bounds, trailer_session, PackEntry, PackError, FOOTER_LEN,
};
use crate::object::tree::Tree;

impl Repository {
    /// Reads a whole object of at most `max_len` bytes and checks that its
    /// name is the hash of its bytes.
    pub(super) fn get_verified(
        &self,
        kind: ObjectKind,
        name: &str,
        max_len: u64,
    ) -> Result<Vec<u8>> {
        let size = self
            .backend
            .size(kind, name)
            .map_err(|e| Error::storage(kind, name, e))?;
        if size > max_len {
            return Err(Error::corrupted(
                object_name(kind, name),
                format!("length {size} exceeds the limit of {max_len}"),
            ));
        }
        let bytes = self
            .backend
            .get(kind, name)
            .map_err(|e| Error::storage(kind, name, e))?;
        if Id::of_bytes(&bytes).to_hex() != name {
            return Err(Error::corrupted(
                object_name(kind, name),
                "content does not match its name",
            ));
        }
        Ok(bytes)
    }

    /// Reads, authenticates and checks one blob. If its location fails,
    /// any other location the index has for it is tried; if all fail in a
    /// way a stale cache could explain, the cache is rebuilt (once per
    /// open repository) and the read tried again.
    pub fn read_blob(&self, id: &BlobId, expected: BlobType) -> Result<Vec<u8>> {
        let seen = self.index_rebuilds.load(Ordering::SeqCst);
        match self.read_blob_anywhere(id, expected) {
            Err(e) if may_be_stale_cache(&e) => {
                let reason = format!("out of step with the repository (blob {id}: {e})");
                // If the rebuild fails too, the read's own error is the one
                // that tells the user what is missing.
                let notice = match self.rebuild_index(seen, &reason) {
                    Ok(Rebuild::Done(notice)) => notice,
                    Ok(Rebuild::ByAnotherThread) => None,
                    Ok(Rebuild::Exhausted) | Err(_) => return Err(e),
                };
                let again = self.read_blob_anywhere(id, expected);
                // Only worth saying if the rebuild is what made it readable:
                // data really missing is reported as such by the caller.
                if again.is_ok() {
                    self.notices_lock().extend(notice);
                }
                again
            }
            other => other,
        }
    }

    /// [`Repository::read_blob`] from the locations the cache has now.
    fn read_blob_anywhere(&self, id: &BlobId, expected: BlobType) -> Result<Vec<u8>> {
        let primary = self.with_index(|index| index.locations(id, false))?;
        let Some((_, location)) = primary.first() else {
            return Err(Error::BlobNotIndexed { id: id.to_string() });
        };
        let first_error = match self.read_blob_at(id, expected, location) {
            Ok(plaintext) => return Ok(plaintext),
            Err(e) => e,
        };
        let all = self.with_index(|index| index.locations(id, true))?;
        for (_, other) in all.iter().skip(1) {
            if let Ok(plaintext) = self.read_blob_at(id, expected, other) {
                return Ok(plaintext);
            }
        }
        Err(first_error)
    }

    /// Reads one blob from one location.
    fn read_blob_at(
        &self,
        id: &BlobId,
        expected: BlobType,
        location: &BlobLocation,
    ) -> Result<Vec<u8>> {
        let what = format!("blob {id} in pack {}", location.pack);
        let entry = location.entry;
        if entry.blob_type() != Some(expected) || !entry.is_plausible() {
            return Err(Error::corrupted(what, "index entry has the wrong type"));
        }
        let sealer = self.session_sealer(location.session)?;
        let pack_name = location.pack.to_string();
        let stored = self
            .backend
            .get_range(
                ObjectKind::Pack,
                &pack_name,
                u64::from(entry.offset),
                u64::from(entry.stored_len),
            )
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => Error::corrupted(
                    object_name(ObjectKind::Pack, &pack_name),
                    format!("truncated: blob {id} lies beyond its end"),
                ),
                _ => Error::storage(ObjectKind::Pack, &pack_name, e),
            })?;
        self.open_blob(&entry, expected, stored, &sealer)
            .map_err(|e| Error::corrupted(what, e))
    }

    /// Authenticates, decompresses and checks one stored blob, described by
    /// its (plausible) pack entry and sealed with `sealer`.
    pub(crate) fn open_blob(
        &self,
        entry: &PackEntry,
        expected: BlobType,
        stored: Vec<u8>,
        sealer: &Sealer,
    ) -> std::result::Result<Vec<u8>, blob::BlobError> {
        let compression = entry
            .compression()
            .expect("plausible entries have a known compression");
        blob::open(
            &entry.id,
            expected,
            compression,
            entry.raw_len,
            stored,
            sealer,
            &self.keys.id_key,
        )
    }

    /// The session and entries of a pack's trailer, read with two range
    /// reads (footer, then trailer) and authenticated.
    pub(crate) fn read_pack_trailer(&self, name: &str) -> Result<(SessionId, Vec<PackEntry>)> {
        let object = object_name(ObjectKind::Pack, name);
        let storage = |e| Error::storage(ObjectKind::Pack, name, e);
        let len = self.backend.size(ObjectKind::Pack, name).map_err(storage)?;
        if len < FOOTER_LEN as u64 {
            return Err(Error::corrupted(object, "shorter than a pack footer"));
        }
        let footer = self
            .backend
            .get_range(
                ObjectKind::Pack,
                name,
                len - FOOTER_LEN as u64,
                FOOTER_LEN as u64,
            )
            .map_err(storage)?;
        let (offset, trailer_len) =
            trailer_bounds(&footer, len).map_err(|e| Error::corrupted(&object, e))?;
        let trailer = self
            .backend
            .get_range(ObjectKind::Pack, name, offset, u64::from(trailer_len))
            .map_err(storage)?;
        let session = trailer_session(&trailer).map_err(|e| Error::corrupted(&object, e))?;
        let sealer = self.session_sealer(session)?;
        let entries = open_trailer(&trailer, offset, &sealer).map_err(|e| match e {
            PackError::Authentication => Error::Unauthenticated {
                object: object.clone(),
            },
            other => Error::corrupted(&object, other),
        })?;
        Ok((session, entries))
    }

    /// A tree blob's plaintext: from storage, or for a write-only key
    /// (which cannot open it there) from the trees it wrote itself, kept
    /// on this host.
    fn tree_bytes(&self, id: &BlobId) -> Result<Vec<u8>> {
        if self.keys.private.is_some() {
            return self.read_blob(id, BlobType::Tree);
        }
        let refused = Error::WriteOnly {
            action: "read trees other than those of its own latest backups",
        };
        let bytes = match &self.written {
            Some(written) => written.tree(id)?.ok_or(refused)?,
            None => return Err(refused),
        };
        if self.blob_id(BlobType::Tree, &bytes) != *id {
            return Err(Error::corrupted(
                format!("tree {id} in the local cache"),
                "content does not match its id",
            ));
        }
        Ok(bytes)
    }

    /// Reads and decodes a tree blob.
    pub fn read_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.tree_bytes(id)?;
        Tree::decode(&bytes).map_err(|e| Error::corrupted(format!("tree {id}"), e))
    }

    /// Reads a tree blob leaving out the entries [`Tree::decode`] refuses
    /// (see [`Tree::decode_lenient`]); returns them, each with its error.
    pub(crate) fn read_tree_lenient(&self, id: &BlobId) -> Result<(Tree, Refused)> {
        let bytes = self.tree_bytes(id)?;
        let (tree, refused) =
            Tree::decode_lenient(&bytes).map_err(|e| Error::corrupted(format!("tree {id}"), e))?;
        let refused = refused
            .into_iter()
            .map(|(name, why)| (name, Error::corrupted(format!("tree {id}"), why)))
            .collect();
        Ok((tree, refused))
    }
}
