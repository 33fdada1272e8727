//! What every subcommand starts from: the global flags, and the steps most of them share
//! (load the pipeline, open the store, instantiate a closure, plan it).

use std::collections::HashSet;
use std::path::PathBuf;

use crate::Error;
use crate::pipeline::{Instantiation, Pipeline, instantiate};
use crate::realize::Plan;
use crate::stage::Registry;
use crate::store::Store;
use crate::store::roots::TempRoots;
use crate::store::source::StoreLookup;

/// The pipeline used when neither `--pipeline` nor `KDBUILD_PIPELINE` names one.
pub const DEFAULT_PIPELINE: &str = "pipelines/kdgat.toml";

/// Where builds run (`--executor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    Local,
    Slurm,
}

/// Global flags.
#[derive(Debug, Clone)]
pub struct Context {
    pub store: PathBuf,
    pub pipeline: PathBuf,
    pub json: bool,
    pub verbose: bool,
    pub executor: ExecutorKind,
    /// `--profile`: the SLURM profile file.
    pub profile: Option<PathBuf>,
}

impl Context {
    /// Loads the pipeline with the built-in stage kinds.
    pub fn load(&self) -> Result<(Pipeline, Registry), Error> {
        let registry = Registry::builtin();
        let p = Pipeline::load(&self.pipeline, &registry)?;
        Ok((p, registry))
    }

    /// The SLURM profile: `--profile`, else `kdbuild.toml` beside the pipeline, else defaults.
    pub fn slurm_profile(&self) -> Result<crate::executor::slurm::Profile, Error> {
        Ok(crate::executor::slurm::profile::find(
            self.profile.as_deref(),
            &self.pipeline,
        )?)
    }

    /// Opens (creating) the store.
    pub fn open_store(&self) -> Result<Store, Error> {
        Ok(Store::open(&self.store)?)
    }

    /// Opens the store without changing anything; `None` if it does not exist.
    pub fn open_store_read_only(&self) -> Result<Option<Store>, Error> {
        Ok(Store::open_read_only(&self.store)?)
    }

    /// Instantiates the closure of `roots` (target indices).
    pub fn instantiate(
        &self,
        p: &Pipeline,
        registry: &Registry,
        roots: &[usize],
        store: Option<&Store>,
    ) -> Result<Instantiation, Error> {
        let mut lookup = StoreLookup { store };
        Ok(instantiate(p, registry, roots, &mut lookup)?)
    }

    /// Instantiates and plans the closure of `roots`, forcing `forced` (target indices).
    pub fn plan(
        &self,
        p: &Pipeline,
        registry: &Registry,
        roots: &[usize],
        forced_targets: &HashSet<usize>,
        store: Option<&Store>,
    ) -> Result<Plan, Error> {
        let inst = self.instantiate(p, registry, roots, store)?;
        let root_nodes: Vec<usize> = roots.iter().filter_map(|t| inst.node_of(*t)).collect();
        let forced: HashSet<usize> = forced_targets
            .iter()
            .filter_map(|t| inst.node_of(*t))
            .collect();
        Ok(Plan::new(p, inst, root_nodes, &forced, store)?)
    }

    /// Like [`Context::plan`] for a realize: the closure's store paths become this process's
    /// temporary GC roots *before* their validity is read, so a concurrent `kdbuild gc`
    /// either ran before (and what it deleted is planned as missing) or keeps them. Waits
    /// while a gc runs. Keep the returned roots alive until the result links are made.
    pub fn plan_rooted(
        &self,
        p: &Pipeline,
        registry: &Registry,
        roots: &[usize],
        forced_targets: &HashSet<usize>,
        store: &Store,
    ) -> Result<(Plan, TempRoots), Error> {
        let inst = self.instantiate(p, registry, roots, Some(store))?;
        let temp = TempRoots::hold(
            store.root(),
            inst.nodes.iter().map(|n| n.path.to_string()),
            &mut || eprintln!("waiting for a running `kdbuild gc` to finish"),
        )?;
        let root_nodes: Vec<usize> = roots.iter().filter_map(|t| inst.node_of(*t)).collect();
        let forced: HashSet<usize> = forced_targets
            .iter()
            .filter_map(|t| inst.node_of(*t))
            .collect();
        Ok((Plan::new(p, inst, root_nodes, &forced, Some(store))?, temp))
    }
}
