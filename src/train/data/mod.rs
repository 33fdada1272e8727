//! CAN data (spec §2–§3): streaming readers for every format, windows → graphs, the
//! vocabulary with its UNK slot, leak-free splits, and the preprocess that ties them into one
//! output directory for the trainers.
//!
//! One module per job, in data-flow order:
//!
//! | module | job |
//! |---|---|
//! | [`frame`] | the `Frame` record and the field parsers (IDs, hex payloads, bytes) |
//! | [`format`](mod@format) | presets and the generic CSV mapping |
//! | [`reader`] | per-file reading: dispatch, counts, malformed-row policy |
//! | [`csv_reader`], [`candump`] | the CSV mapping; candump and HCRL text forms |
//! | [`zip`] | zip members read in place; content hashes of decompressed data |
//! | [`layout`] | roles of files (folders, streams, manifest) and de-duplication |
//! | [`window`] | compact streams and window geometry |
//! | [`graph`] | one window → nodes, edges, node and edge features |
//! | [`vocab`] | the train-window vocabulary and UNK |
//! | [`split`] | block, file and stream splits with embargo |
//! | [`seed`] | per-purpose sub-seeds |
//! | [`options`], [`cfg`](mod@cfg) | the dataset and stage configuration tables |
//! | [`manifest`] | `manifest.json` |
//! | [`preprocess`] | the whole dataset → output directory (layout in its doc) |
//! | [`graphs`] | the packed `GraphSet` the trainers load |
//!
//! Nothing here knows the engine: `crate::stage::kdgat::preprocess` adapts [`preprocess`].

pub mod candump;
pub mod cfg;
pub mod csv_reader;
pub mod format;
pub mod frame;
pub mod graph;
pub mod graphs;
pub mod layout;
pub mod manifest;
pub mod options;
pub mod preprocess;
pub mod reader;
pub mod seed;
pub mod split;
pub mod vocab;
pub mod window;
pub mod zip;
