//! The vocabulary (spec §2.5): the sorted distinct IDs of frames in **train** windows, each
//! mapped to its rank; every other ID (val-only, test-only, unparsable) maps to UNK, the last
//! index. `num_ids = len(ids) + 1`. Frozen once built: it is written to `vocab.json` and the
//! models size their embedding by it.
//!
//! "Frames in a window" are its rows' source frames and the successor of its last row, so
//! every node of a training graph has its own index.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::window::NO_ID;

/// A frozen vocabulary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vocab {
    /// Sorted distinct CAN IDs; index = rank.
    pub ids: Vec<u32>,
    /// The UNK index, `ids.len()`.
    pub unk: u32,
    /// `ids.len() + 1`.
    pub num_ids: u32,
}

impl Vocab {
    /// A vocabulary of these IDs (any order, duplicates allowed).
    pub fn new(ids: impl IntoIterator<Item = u32>) -> Self {
        let mut ids: Vec<u32> = ids.into_iter().filter(|&i| i != NO_ID).collect();
        ids.sort_unstable();
        ids.dedup();
        let unk = ids.len() as u32;
        Vocab {
            ids,
            unk,
            num_ids: unk + 1,
        }
    }

    /// The index of a raw ID ([`NO_ID`] and unknown IDs give UNK).
    #[inline]
    pub fn index(&self, id: u32) -> u32 {
        match self.ids.binary_search(&id) {
            Ok(i) => i as u32,
            Err(_) => self.unk,
        }
    }

    /// Indices of a whole stream's IDs.
    pub fn map(&self, ids: &[u32]) -> Vec<u32> {
        // IDs repeat heavily: remember the last one looked up.
        let mut last = (NO_ID, self.unk);
        ids.iter()
            .map(|&id| {
                if id != last.0 {
                    last = (id, self.index(id));
                }
                last.1
            })
            .collect()
    }
}

/// Collects IDs from training windows.
#[derive(Default)]
pub struct VocabBuilder {
    seen: HashSet<u32>,
}

impl VocabBuilder {
    /// Adds the IDs of frames `ids` (a window's frames and its last row's successor).
    pub fn add(&mut self, ids: &[u32]) {
        self.seen
            .extend(ids.iter().copied().filter(|&i| i != NO_ID));
    }

    pub fn build(self) -> Vocab {
        Vocab::new(self.seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unk_is_last() {
        let mut b = VocabBuilder::default();
        b.add(&[0x30, 0x10, NO_ID, 0x20, 0x10]);
        let v = b.build();
        assert_eq!(v.ids, vec![0x10, 0x20, 0x30]);
        assert_eq!((v.unk, v.num_ids), (3, 4));
        assert_eq!(v.map(&[0x20, 0x99, NO_ID, 0x10]), vec![1, 3, 3, 0]);
    }
}
