//! CAN data: streaming readers, windows → graphs, vocabulary, leak-free splits (spec §2–§3).

pub mod graphs;
