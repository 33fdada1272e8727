//! Graph windows in packed form: the contract between the preprocess stage, which writes them,
//! and the trainers, which load them.
//!
//! One [`GraphSet`] per split (`train`, `val`, `test_01_…`, `test_streams`). Graphs are packed
//! CSR-style: graph `g` owns nodes `node_ptr[g]..node_ptr[g+1]` and edges
//! `edge_ptr[g]..edge_ptr[g+1]`; edge endpoints are *local* node indices within their graph
//! (batching adds the offsets, as PyG does). On disk a set is one safetensors file with the
//! tensors named below, so PyTorch users can read it too:
//!
//! | tensor | dtype | shape | meaning |
//! |---|---|---|---|
//! | `x` | f32 | `[N, 11]` | node features, spec §3.3 (column 0 = vocabulary index) |
//! | `node_ptr` | u32 | `[G+1]` | node offsets |
//! | `edge_src`, `edge_dst` | u32 | `[E]` | local endpoints, messages flow src → dst |
//! | `edge_ptr` | u32 | `[G+1]` | edge offsets |
//! | `edge_attr` | f32 | `[E, 11]` | optional edge features, spec §3.4 |
//! | `y` | u8 | `[G]` | graph label, 1 = attack |
//! | `node_y` | u8 | `[N]` | node label: 1 iff a row with that node as source is an attack |
//! | `file` | u32 | `[G]` | index into `files` (metadata) of the graph's input file |
//! | `window` | u32 | `[G]` | the window's index within its file's stream |
//!
//! The metadata key `files` holds the JSON list of input file names (relative paths).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use thiserror::Error;

/// Node feature width (spec §3.3).
pub const NODE_FEATURES: usize = 11;
/// Edge feature width (spec §3.4).
pub const EDGE_FEATURES: usize = 11;

/// Graph windows of one split, packed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphSet {
    pub x: Vec<f32>,
    pub node_ptr: Vec<u32>,
    pub edge_src: Vec<u32>,
    pub edge_dst: Vec<u32>,
    pub edge_ptr: Vec<u32>,
    pub edge_attr: Option<Vec<f32>>,
    pub y: Vec<u8>,
    pub node_y: Vec<u8>,
    pub file: Vec<u32>,
    pub window: Vec<u32>,
    pub files: Vec<String>,
}

/// One graph, borrowed from a [`GraphSet`].
#[derive(Clone, Copy, Debug)]
pub struct GraphRef<'a> {
    /// [n, 11]
    pub x: &'a [f32],
    pub edge_src: &'a [u32],
    pub edge_dst: &'a [u32],
    pub edge_attr: Option<&'a [f32]>,
    pub y: u8,
    pub node_y: &'a [u8],
}

impl GraphRef<'_> {
    pub fn num_nodes(&self) -> usize {
        self.x.len() / NODE_FEATURES
    }
}

#[derive(Debug, Error)]
pub enum GraphSetError {
    #[error("`{}`: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}`: {message}", path.display())]
    Format {
        path: std::path::PathBuf,
        message: String,
    },
}

impl GraphSet {
    /// An empty set with its offset arrays started.
    pub fn new() -> Self {
        GraphSet {
            node_ptr: vec![0],
            edge_ptr: vec![0],
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    pub fn num_nodes(&self) -> usize {
        self.x.len() / NODE_FEATURES
    }

    pub fn num_edges(&self) -> usize {
        self.edge_src.len()
    }

    /// Graph `g`.
    pub fn graph(&self, g: usize) -> GraphRef<'_> {
        let (n0, n1) = (self.node_ptr[g] as usize, self.node_ptr[g + 1] as usize);
        let (e0, e1) = (self.edge_ptr[g] as usize, self.edge_ptr[g + 1] as usize);
        GraphRef {
            x: &self.x[n0 * NODE_FEATURES..n1 * NODE_FEATURES],
            edge_src: &self.edge_src[e0..e1],
            edge_dst: &self.edge_dst[e0..e1],
            edge_attr: self
                .edge_attr
                .as_ref()
                .map(|a| &a[e0 * EDGE_FEATURES..e1 * EDGE_FEATURES]),
            y: self.y[g],
            node_y: &self.node_y[n0..n1],
        }
    }

    /// Appends a graph. `x` is [n, 11], `edges` local (src, dst) pairs.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        x: &[f32],
        node_y: &[u8],
        edges: &[(u32, u32)],
        edge_attr: Option<&[f32]>,
        y: u8,
        file: u32,
        window: u32,
    ) {
        debug_assert_eq!(x.len(), node_y.len() * NODE_FEATURES);
        self.x.extend_from_slice(x);
        self.node_y.extend_from_slice(node_y);
        self.node_ptr.push((self.x.len() / NODE_FEATURES) as u32);
        for &(s, d) in edges {
            self.edge_src.push(s);
            self.edge_dst.push(d);
        }
        if let Some(a) = edge_attr {
            self.edge_attr
                .get_or_insert_with(Vec::new)
                .extend_from_slice(a);
        }
        self.edge_ptr.push(self.edge_src.len() as u32);
        self.y.push(y);
        self.file.push(file);
        self.window.push(window);
    }

    /// Appends every graph of `other` (offsets shifted; `files` indices kept as they are, so
    /// both sets must index the same `files` list). Lets per-file sets built in parallel be
    /// joined in file order.
    pub fn append(&mut self, other: &GraphSet) {
        let n0 = self.num_nodes() as u32;
        let e0 = self.num_edges() as u32;
        self.x.extend_from_slice(&other.x);
        self.node_y.extend_from_slice(&other.node_y);
        self.node_ptr
            .extend(other.node_ptr.iter().skip(1).map(|p| p + n0));
        self.edge_src.extend_from_slice(&other.edge_src);
        self.edge_dst.extend_from_slice(&other.edge_dst);
        self.edge_ptr
            .extend(other.edge_ptr.iter().skip(1).map(|p| p + e0));
        if let Some(a) = &other.edge_attr {
            self.edge_attr
                .get_or_insert_with(Vec::new)
                .extend_from_slice(a);
        }
        self.y.extend_from_slice(&other.y);
        self.file.extend_from_slice(&other.file);
        self.window.extend_from_slice(&other.window);
    }

    /// Writes the set as safetensors.
    pub fn save(&self, path: &Path) -> Result<(), GraphSetError> {
        let n = self.num_nodes();
        let e = self.num_edges();
        let g = self.len();
        let f32b = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let u32b = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut owned: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
            ("x", Dtype::F32, vec![n, NODE_FEATURES], f32b(&self.x)),
            ("node_ptr", Dtype::U32, vec![g + 1], u32b(&self.node_ptr)),
            ("edge_src", Dtype::U32, vec![e], u32b(&self.edge_src)),
            ("edge_dst", Dtype::U32, vec![e], u32b(&self.edge_dst)),
            ("edge_ptr", Dtype::U32, vec![g + 1], u32b(&self.edge_ptr)),
            ("y", Dtype::U8, vec![g], self.y.clone()),
            ("node_y", Dtype::U8, vec![n], self.node_y.clone()),
            ("file", Dtype::U32, vec![g], u32b(&self.file)),
            ("window", Dtype::U32, vec![g], u32b(&self.window)),
        ];
        if let Some(a) = &self.edge_attr {
            owned.push(("edge_attr", Dtype::F32, vec![e, EDGE_FEATURES], f32b(a)));
        }
        let fmt_err = |m: String| GraphSetError::Format {
            path: path.to_path_buf(),
            message: m,
        };
        let views: Vec<(&str, TensorView)> = owned
            .iter()
            .map(|(name, dt, shape, data)| {
                TensorView::new(*dt, shape.clone(), data)
                    .map(|v| (*name, v))
                    .map_err(|e| fmt_err(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let meta: HashMap<String, String> = [(
            "files".to_string(),
            serde_json::to_string(&self.files).expect("strings serialise"),
        )]
        .into();
        safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| fmt_err(e.to_string()))
    }

    /// Reads a set written by [`GraphSet::save`], checking shapes and offsets.
    pub fn load(path: &Path) -> Result<GraphSet, GraphSetError> {
        let bytes = std::fs::read(path).map_err(|source| GraphSetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let fmt_err = |m: String| GraphSetError::Format {
            path: path.to_path_buf(),
            message: m,
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| fmt_err(e.to_string()))?;
        let files: Vec<String> = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("files"))
            .map(|f| serde_json::from_str(f))
            .transpose()
            .map_err(|e| fmt_err(format!("metadata `files`: {e}")))?
            .unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).map_err(|e| fmt_err(e.to_string()))?;
        let get = |name: &str, dt: Dtype| -> Result<Option<Vec<u8>>, GraphSetError> {
            match st.tensor(name) {
                Ok(t) if t.dtype() == dt => Ok(Some(t.data().to_vec())),
                Ok(t) => Err(fmt_err(format!(
                    "tensor `{name}` is {:?}, expected {dt:?}",
                    t.dtype()
                ))),
                Err(_) => Ok(None),
            }
        };
        let need = |name: &str, dt: Dtype| {
            get(name, dt)?.ok_or_else(|| fmt_err(format!("tensor `{name}` is missing")))
        };
        let f32s = |b: Vec<u8>| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let u32s = |b: Vec<u8>| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let set = GraphSet {
            x: f32s(need("x", Dtype::F32)?),
            node_ptr: u32s(need("node_ptr", Dtype::U32)?),
            edge_src: u32s(need("edge_src", Dtype::U32)?),
            edge_dst: u32s(need("edge_dst", Dtype::U32)?),
            edge_ptr: u32s(need("edge_ptr", Dtype::U32)?),
            edge_attr: get("edge_attr", Dtype::F32)?.map(f32s),
            y: need("y", Dtype::U8)?,
            node_y: need("node_y", Dtype::U8)?,
            file: u32s(need("file", Dtype::U32)?),
            window: u32s(need("window", Dtype::U32)?),
            files,
        };
        set.check().map_err(fmt_err)?;
        Ok(set)
    }

    /// Checks that offsets, lengths and local indices agree.
    pub fn check(&self) -> Result<(), String> {
        let g = self.len();
        if self.node_ptr.len() != g + 1 || self.edge_ptr.len() != g + 1 {
            return Err(format!(
                "{g} graphs but offsets of length {}/{}",
                self.node_ptr.len(),
                self.edge_ptr.len()
            ));
        }
        if self.file.len() != g || self.window.len() != g {
            return Err("`file`/`window` length differs from the graph count".into());
        }
        if *self.node_ptr.last().unwrap_or(&0) as usize != self.num_nodes()
            || *self.edge_ptr.last().unwrap_or(&0) as usize != self.num_edges()
            || self.node_y.len() != self.num_nodes()
            || self.edge_dst.len() != self.num_edges()
        {
            return Err("offsets do not match the node or edge arrays".into());
        }
        for i in 0..g {
            let n = self.node_ptr[i + 1]
                .checked_sub(self.node_ptr[i])
                .ok_or("node offsets decrease")?;
            let (e0, e1) = (self.edge_ptr[i] as usize, self.edge_ptr[i + 1] as usize);
            if e1 < e0 {
                return Err("edge offsets decrease".into());
            }
            if self.edge_src[e0..e1]
                .iter()
                .chain(&self.edge_dst[e0..e1])
                .any(|&v| v >= n)
            {
                return Err(format!("graph {i} has an edge to a node it does not have"));
            }
            if self.file[i] as usize >= self.files.len().max(1) && !self.files.is_empty() {
                return Err(format!(
                    "graph {i} names file {} of {}",
                    self.file[i],
                    self.files.len()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip() {
        let mut s = GraphSet::new();
        s.files = vec!["a.csv".into()];
        let x: Vec<f32> = (0..22).map(|i| i as f32).collect();
        s.push(&x, &[0, 1], &[(0, 1), (1, 1)], None, 1, 0, 0);
        s.push(&x[..11], &[0], &[(0, 0)], None, 0, 0, 1);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.safetensors");
        s.save(&p).unwrap();
        let back = GraphSet::load(&p).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.graph(0).num_nodes(), 2);
        assert_eq!(back.graph(1).edge_src, &[0]);
    }

    #[test]
    fn append_shifts_offsets_and_empty_sets_round_trip() {
        let mut a = GraphSet::new();
        a.push(&[0.0; 22], &[0, 1], &[(0, 1)], Some(&[1.0; 11]), 1, 0, 0);
        let mut b = GraphSet::new();
        b.push(&[1.0; 11], &[0], &[(0, 0)], Some(&[2.0; 11]), 0, 1, 5);
        let mut joined = GraphSet::new();
        joined.append(&a);
        joined.append(&b);
        let mut direct = a.clone();
        direct.push(&[1.0; 11], &[0], &[(0, 0)], Some(&[2.0; 11]), 0, 1, 5);
        assert_eq!(joined, direct);
        joined.check().unwrap();

        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("empty.safetensors");
        let empty = GraphSet {
            edge_attr: Some(Vec::new()),
            ..GraphSet::new()
        };
        empty.save(&p).unwrap();
        assert_eq!(GraphSet::load(&p).unwrap(), empty);
    }

    #[test]
    fn bad_offsets_are_rejected() {
        let mut s = GraphSet::new();
        s.push(&[0.0; 11], &[0], &[(0, 3)], None, 0, 0, 0);
        assert!(s.check().is_err());
    }
}
