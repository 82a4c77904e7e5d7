//! [`IdIndex`]: step id → position, without owning the ids.
//!
//! The ids live in the plan (or the scheduler's slots); the index keeps only positions and
//! looks keys up through a closure. That saves a copy of every id, keeps the table small
//! enough to stay in cache for large plans, and makes cloning the index a plain copy.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// Positions of steps by id. `id_of(position)` must give the id stored at each position
/// inserted, and the same ids on every call.
#[derive(Clone, Default)]
pub(crate) struct IdIndex {
    table: HashTable<usize>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for IdIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdIndex")
            .field("len", &self.table.len())
            .finish()
    }
}

impl IdIndex {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            table: HashTable::with_capacity(capacity),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The position of `key`.
    pub(crate) fn get<'a>(&self, key: &str, id_of: impl Fn(usize) -> &'a str) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |&i| id_of(i) == key).copied()
    }

    /// Records `position` for `key` unless the key is present; returns whether it was new.
    pub(crate) fn insert<'a>(
        &mut self,
        key: &str,
        position: usize,
        id_of: impl Fn(usize) -> &'a str,
    ) -> bool {
        let hash = self.hasher.hash_one(key);
        if self.table.find(hash, |&i| id_of(i) == key).is_some() {
            return false;
        }
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, position, |&i| hasher.hash_one(id_of(i)));
        true
    }
}
