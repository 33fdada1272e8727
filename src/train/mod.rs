//! KD-GAT in candle: CAN data, graph windows, models, trainers and metrics.
//!
//! This module depends on none of the engine (`derivation`, `store`, `realize`): the stage
//! kinds in `crate::stage::kdgat` adapt it to the engine. Keeping it engine-free means the
//! models can be tested, benchmarked and reused as a plain library.

pub mod data;
pub mod model;
