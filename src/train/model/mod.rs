//! Models and trainers in candle: GATConv, GAT, VGAE, fusion, distillation, metrics (spec §4–§6).
