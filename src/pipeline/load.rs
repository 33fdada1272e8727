//! Loading a pipeline file: parse, validate, expand the matrix into targets and resolve their
//! inputs, with every mistake located at its file, line, column and key.
//!
//! Loading reads only the pipeline file (and checks that listed scripts exist). Source data is
//! hashed later, by `instantiate`, and only for the targets a command needs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{Location, PipelineError, did_you_mean};
use super::resources;
use super::spec::{InputSpec, InputWhat, PipelineSpec, StageSpec};
use super::template::{self, Resolve};
use super::vars::{self, Expanded};
use crate::derivation::{Builder, Resources, canonical};
use crate::stage::Registry;
use crate::store_path::check_name;

/// A loaded pipeline: every target, its resolved config and its inputs.
#[derive(Debug)]
pub struct Pipeline {
    pub file: PathBuf,
    /// Relative paths in the file start here.
    pub root: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub sources: IndexMap<String, Source>,
    pub matrix: IndexMap<String, Vec<String>>,
    pub stages: IndexMap<String, Stage>,
    /// Every target, stage by stage in file order, each stage in matrix order.
    pub targets: Vec<Target>,
    index: HashMap<String, usize>,
}

/// A source dataset (fixed-output derivation).
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub path: PathBuf,
    pub files: Option<Vec<String>>,
    pub about: Option<String>,
    pub config: Value,
    /// Environment variables its path was built from.
    pub env_used: Vec<String>,
    pub loc: Location,
}

/// A stage as declared, with what its targets share.
#[derive(Debug)]
pub struct Stage {
    pub name: String,
    pub kind: String,
    pub description: Option<String>,
    /// The matrix variables its target template uses.
    pub axes: Vec<String>,
    /// Where its `target` key is (errors about its targets point here).
    pub loc: Location,
    /// Script name → absolute path (`command` stages).
    pub scripts: Arc<BTreeMap<String, PathBuf>>,
    pub resources: Arc<Resources>,
    pub pass_env: Arc<Vec<String>>,
    /// Indices into [`Pipeline::targets`].
    pub targets: Vec<usize>,
}

/// One expanded target. What its stage's targets share lives in the [`Stage`], and what
/// several targets compute alike (configs, command lines) is shared, so a 32,000-target
/// pipeline stays small in memory.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    /// Index into [`Pipeline::stages`].
    pub stage: usize,
    /// Matrix variable → value, in the stage's axis order.
    pub bindings: Vec<(Arc<str>, Arc<str>)>,
    /// Canonical config with the matrix's `config_by` choices merged in.
    pub config: Arc<Value>,
    /// Inputs by name, sorted by name.
    pub inputs: Vec<(Arc<str>, TargetInput)>,
    pub builder: Arc<Builder>,
}

impl Target {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&TargetInput> {
        self.inputs
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &self.inputs[i].1)
    }

    /// The value of matrix variable `axis`.
    pub fn binding(&self, axis: &str) -> Option<&str> {
        self.bindings
            .iter()
            .find(|(a, _)| &**a == axis)
            .map(|(_, v)| &**v)
    }
}

/// What an input of a target resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetInput {
    /// Another target, by index.
    Target(usize),
    /// A source, by name.
    Source(String),
}

impl Pipeline {
    /// Loads and validates the pipeline at `file`.
    pub fn load(file: &Path, registry: &Registry) -> Result<Pipeline, PipelineError> {
        let bytes = std::fs::read(file).map_err(|source| PipelineError::Read {
            path: file.to_path_buf(),
            source,
        })?;
        Self::load_bytes(file, &bytes, registry, &|n| std::env::var(n).ok())
    }

    /// Loads from bytes already read; `env` looks up environment variables.
    pub fn load_bytes(
        file: &Path,
        bytes: &[u8],
        registry: &Registry,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Pipeline, PipelineError> {
        let src = std::str::from_utf8(bytes).map_err(|e| PipelineError::NotUtf8 {
            loc: Location::of_offset(
                file,
                std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
                e.valid_up_to(),
            ),
        })?;
        let root = DeTable::parse(src).map_err(|e| syntax(file, src, &e))?;
        let doc = Doc { file, src, root };
        let spec = PipelineSpec::deserialize(toml::de::Deserializer::from(doc.root.clone()))
            .map_err(|e| syntax(file, src, &e))?;
        Loader {
            doc: &doc,
            registry,
            env,
        }
        .load(spec)
    }

    /// The stage of target `t`.
    pub fn stage_of(&self, t: usize) -> &Stage {
        &self.stages[self.targets[t].stage]
    }

    /// The index of target `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The target named `name`, or an error suggesting the nearest name.
    pub fn target(&self, name: &str) -> Result<usize, PipelineError> {
        self.find(name).ok_or_else(|| PipelineError::UnknownTarget {
            name: name.to_string(),
            suggestion: super::error::nearest(name, self.targets.iter().map(|t| t.name.as_str())),
        })
    }

    /// Targets selected by names or glob patterns (`'student-*-eval'`), in pipeline order
    /// without repeats. A pattern that matches nothing is an error.
    pub fn select(&self, patterns: &[String]) -> Result<Vec<usize>, PipelineError> {
        let mut chosen = vec![false; self.targets.len()];
        let mut out = Vec::new();
        for p in patterns {
            let is_glob = p.contains(['*', '?', '[']);
            if !is_glob {
                let i = self.target(p)?;
                if !chosen[i] {
                    chosen[i] = true;
                    out.push(i);
                }
                continue;
            }
            let pat =
                glob::Pattern::new(p).map_err(|_| PipelineError::NoMatch { pattern: p.clone() })?;
            let mut any = false;
            for (i, t) in self.targets.iter().enumerate() {
                if pat.matches(&t.name) {
                    any = true;
                    if !chosen[i] {
                        chosen[i] = true;
                        out.push(i);
                    }
                }
            }
            if !any {
                return Err(PipelineError::NoMatch { pattern: p.clone() });
            }
        }
        Ok(out)
    }

    /// The sources in the closure of target `t` whose data is not where the pipeline says.
    /// Read-only views (`metrics`, `report`) show such targets as not realized instead of
    /// failing, as `realize` rightly does.
    pub fn missing_sources(&self, t: usize) -> Vec<&Source> {
        let mut out: Vec<&Source> = Vec::new();
        for c in super::instantiate::closure_order(self, &[t]) {
            for (_, input) in &self.targets[c].inputs {
                if let TargetInput::Source(name) = input {
                    let src = &self.sources[name.as_str()];
                    let present = src.path.exists()
                        && src
                            .files
                            .iter()
                            .flatten()
                            .all(|f| src.path.join(f).exists());
                    if !present && !out.iter().any(|s| s.name == src.name) {
                        out.push(src);
                    }
                }
            }
        }
        out
    }

    /// The targets (by index) whose stage is `stage`.
    pub fn stage_targets(&self, stage: &str) -> Result<&[usize], PipelineError> {
        self.stages
            .get(stage)
            .map(|s| s.targets.as_slice())
            .ok_or_else(|| PipelineError::UnknownTarget {
                name: format!("stage {stage}"),
                suggestion: super::error::nearest(stage, self.stages.keys().map(String::as_str)),
            })
    }
}

fn syntax(file: &Path, src: &str, e: &toml::de::Error) -> PipelineError {
    let offset = e.span().map_or(src.len(), |s| s.start);
    let mut message = e.message().trim().to_string();
    // serde says "unknown field `tagret`, expected one of `target`, `kind`": add the nearest.
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, tail)) = rest.split_once('`')
    {
        let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let hint = did_you_mean(name, expected.iter().copied());
        message = format!(
            "unknown key `{name}`{hint}; {}",
            tail.trim_start_matches(", ").trim()
        );
    }
    PipelineError::Syntax {
        loc: Location::of_offset(file, src, offset),
        message,
    }
}

/// The parsed document, kept for locating errors by key path.
struct Doc<'a> {
    file: &'a Path,
    src: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl Doc<'_> {
    /// The location of the value at `path` (or of the deepest part of it that exists).
    fn loc(&self, path: &[&str]) -> Location {
        self.find(path, false)
    }

    /// The location of the key at the end of `path` (for "unknown key"-style errors).
    fn key_loc(&self, path: &[&str]) -> Location {
        self.find(path, true)
    }

    fn find(&self, path: &[&str], key: bool) -> Location {
        let mut span = self.root.span();
        let mut table: Option<&DeTable> = Some(self.root.get_ref());
        let mut array: Option<&[Spanned<DeValue>]> = None;
        for (depth, seg) in path.iter().enumerate() {
            let last = depth + 1 == path.len();
            let value: &Spanned<DeValue> = if let Some(t) = table {
                match t.get_key_value(*seg) {
                    Some((k, v)) => {
                        span = if key && last { k.span() } else { v.span() };
                        v
                    }
                    None => break,
                }
            } else if let Some(a) = array {
                match seg.parse::<usize>().ok().and_then(|i| a.get(i)) {
                    Some(v) => {
                        span = v.span();
                        v
                    }
                    None => break,
                }
            } else {
                break;
            };
            table = value.get_ref().as_table();
            array = value.get_ref().as_array().map(|a| a.as_ref());
        }
        Location::of_offset(self.file, self.src, span.start)
    }

    fn invalid(&self, path: &[&str], message: impl Into<String>) -> PipelineError {
        PipelineError::Invalid {
            loc: self.loc(path),
            key: path.join("."),
            message: message.into(),
        }
    }

    fn invalid_key(&self, path: &[&str], message: impl Into<String>) -> PipelineError {
        PipelineError::Invalid {
            loc: self.key_loc(path),
            key: path.join("."),
            message: message.into(),
        }
    }
}

struct Loader<'a> {
    doc: &'a Doc<'a>,
    registry: &'a Registry,
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// A stage after validation, before expansion.
struct StagePlan<'s> {
    name: &'s str,
    spec: &'s StageSpec,
    axes: Vec<String>,
    /// Values per axis, after the stage's own `matrix` restriction.
    values: Vec<Vec<String>>,
    inputs: Vec<(String, InputSpec)>,
    resources: Resources,
    base_config: Value,
    /// Whether the command line uses anything that differs between targets and is filled at
    /// instantiation (matrix variables, an input that only some targets have).
    builder_varies: bool,
}

impl<'a> Loader<'a> {
    fn load(self, spec: PipelineSpec) -> Result<Pipeline, PipelineError> {
        let doc = self.doc;
        check_name(&spec.pipeline.name)
            .map_err(|e| doc.invalid(&["pipeline", "name"], e.to_string()))?;
        let file_dir = doc.file.parent().unwrap_or(Path::new("."));
        let file_dir = if file_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            file_dir
        };
        let root = match &spec.pipeline.root {
            Some(r) => file_dir.join(r),
            None => file_dir.to_path_buf(),
        };
        let root = std::path::absolute(&root).unwrap_or(root);

        // Path variables.
        let mut pvars: BTreeMap<String, Expanded> = BTreeMap::new();
        for (k, v) in &spec.pipeline.vars {
            let e = vars::expand(v, &pvars, self.env)
                .map_err(|m| doc.invalid(&["pipeline", "vars", k], m))?;
            pvars.insert(k.clone(), e);
        }

        // Sources.
        let mut sources = IndexMap::new();
        for (name, s) in &spec.sources {
            check_name(name).map_err(|e| doc.invalid_key(&["sources", name], e.to_string()))?;
            let e = vars::expand(&s.path, &pvars, self.env)
                .map_err(|m| doc.invalid(&["sources", name, "path"], m))?;
            let config = match &s.config {
                Some(t) => to_json(t, &["sources", name, "config"], doc)?,
                None => Value::Object(Default::default()),
            };
            sources.insert(
                name.clone(),
                Source {
                    name: name.clone(),
                    path: root.join(&e.value),
                    files: s.files.clone(),
                    about: s.about.clone(),
                    config,
                    env_used: e.env_used,
                    loc: doc.loc(&["sources", name, "path"]),
                },
            );
        }

        // Matrix.
        for (axis, values) in &spec.matrix {
            check_name(axis).map_err(|e| doc.invalid_key(&["matrix", axis], e.to_string()))?;
            if values.is_empty() {
                return Err(doc.invalid(
                    &["matrix", axis],
                    "a matrix variable needs at least one value",
                ));
            }
            let mut seen = HashSet::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                let at = || ["matrix".to_string(), axis.clone(), i.to_string()];
                check_name(v).map_err(|e| {
                    let at = at();
                    doc.invalid(&[&at[0], &at[1], &at[2]], e.to_string())
                })?;
                if !seen.insert(v.as_str()) {
                    let at = at();
                    return Err(
                        doc.invalid(&[&at[0], &at[1], &at[2]], format!("`{v}` is listed twice"))
                    );
                }
            }
        }

        // Stages.
        let mut plans = Vec::new();
        for (name, st) in &spec.stages {
            plans.push(self.plan_stage(name, st, &spec, &root)?);
        }

        // Expand every stage into targets.
        let mut targets: Vec<Target> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut stages = IndexMap::new();
        // Per target: indices into its stage plan's inputs that apply to it.
        let mut pending_inputs: Vec<Vec<usize>> = Vec::new();
        let interned: HashMap<&str, Arc<str>> = spec
            .matrix
            .iter()
            .flat_map(|(a, vs)| std::iter::once(a).chain(vs))
            .map(|s| (s.as_str(), Arc::from(s.as_str())))
            .collect();
        for (stage_index, plan) in plans.iter().enumerate() {
            let mut stage_targets = Vec::new();
            let mut config_cache: HashMap<Vec<usize>, Arc<Value>> = HashMap::new();
            let mut last_builder: Option<(Arc<Builder>, Arc<Value>)> = None;
            for combo in combinations(&plan.values) {
                let bindings: Vec<(Arc<str>, Arc<str>)> = plan
                    .axes
                    .iter()
                    .zip(&combo)
                    .map(|(a, v)| (interned[a.as_str()].clone(), interned[*v].clone()))
                    .collect();
                if excluded(plan.spec, &bindings) {
                    continue;
                }
                let name = render_with(&plan.spec.target, &bindings)
                    .map_err(|m| doc.invalid(&["stages", plan.name, "target"], m))?;
                check_name(&name).map_err(|e| {
                    doc.invalid(&["stages", plan.name, "target"], format!("target name {e}"))
                })?;
                if let Some(&other) = index.get(&name) {
                    return Err(doc.invalid(
                        &["stages", plan.name, "target"],
                        format!(
                            "target `{name}` is also produced by stage `{}`",
                            plans[targets[other].stage].name
                        ),
                    ));
                }
                let config = self.merged_config(plan, &bindings, &mut config_cache)?;
                let inputs: Vec<usize> = (0..plan.inputs.len())
                    .filter(|&i| applies(&plan.inputs[i].1.when, &bindings))
                    .collect();
                // A command line that names nothing per-target renders alike for every target
                // with the same config: render it once and share it.
                let builder = match &last_builder {
                    Some((b, c)) if !plan.builder_varies && Arc::ptr_eq(c, &config) => b.clone(),
                    _ => {
                        let b = self.builder(plan, &bindings, &config, &inputs, &name)?;
                        match &last_builder {
                            Some((prev, _)) if **prev == b => prev.clone(),
                            _ => Arc::new(b),
                        }
                    }
                };
                last_builder = Some((builder.clone(), config.clone()));
                index.insert(name.clone(), targets.len());
                stage_targets.push(targets.len());
                targets.push(Target {
                    name,
                    stage: stage_index,
                    bindings,
                    config,
                    inputs: Vec::new(),
                    builder,
                });
                pending_inputs.push(inputs);
            }
            let mut pass_env = spec.defaults.pass_env.clone();
            pass_env.extend(plan.spec.pass_env.iter().cloned());
            stages.insert(
                plan.name.to_string(),
                Stage {
                    name: plan.name.to_string(),
                    kind: plan.spec.kind.clone(),
                    description: plan.spec.description.clone(),
                    axes: plan.axes.clone(),
                    loc: doc.loc(&["stages", plan.name, "target"]),
                    scripts: Arc::new(
                        plan.spec
                            .scripts
                            .iter()
                            .map(|(k, v)| (k.clone(), root.join(v)))
                            .collect(),
                    ),
                    resources: Arc::new(plan.resources.clone()),
                    pass_env: Arc::new(pass_env),
                    targets: stage_targets,
                },
            );
        }

        // Resolve inputs to targets and sources.
        let input_names: Vec<Vec<Arc<str>>> = plans
            .iter()
            .map(|p| {
                p.inputs
                    .iter()
                    .map(|(n, _)| Arc::from(n.as_str()))
                    .collect()
            })
            .collect();
        for (ti, inputs) in pending_inputs.into_iter().enumerate() {
            let mut resolved = Vec::with_capacity(inputs.len());
            let t = &targets[ti];
            let plan = &plans[t.stage];
            for ii in inputs {
                let (iname, input) = &plan.inputs[ii];
                let key = ["stages", plan.name, "inputs", iname.as_str()];
                let resolved_input = match &input.what {
                    InputWhat::Target(tpl) => {
                        let name =
                            render_with(tpl, &t.bindings).map_err(|m| doc.invalid(&key, m))?;
                        match index.get(&name) {
                            Some(&i) => TargetInput::Target(i),
                            None => {
                                let hint = did_you_mean(&name, index.keys().map(String::as_str));
                                return Err(doc.invalid(
                                    &key,
                                    format!(
                                        "target `{}` needs unknown target `{name}`{hint}",
                                        t.name
                                    ),
                                ));
                            }
                        }
                    }
                    InputWhat::Source(tpl) => {
                        let name =
                            render_with(tpl, &t.bindings).map_err(|m| doc.invalid(&key, m))?;
                        if !sources.contains_key(&name) {
                            let hint = did_you_mean(&name, sources.keys().map(String::as_str));
                            return Err(doc.invalid(
                                &key,
                                format!("target `{}` needs unknown source `{name}`{hint}", t.name),
                            ));
                        }
                        TargetInput::Source(name)
                    }
                };
                resolved.push((input_names[t.stage][ii].clone(), resolved_input));
            }
            resolved.sort_by(|a, b| a.0.cmp(&b.0));
            targets[ti].inputs = resolved;
        }

        // Kind-specific checks, now that inputs are known; once per distinct config and
        // input list.
        let mut checked: HashSet<(usize, *const Value, Vec<Arc<str>>)> = HashSet::new();
        for t in &targets {
            let names: Vec<Arc<str>> = t.inputs.iter().map(|(k, _)| k.clone()).collect();
            if !checked.insert((t.stage, Arc::as_ptr(&t.config), names.clone())) {
                continue;
            }
            let kind = self
                .registry
                .get(&plans[t.stage].spec.kind)
                .expect("kinds were checked");
            let names: Vec<&str> = names.iter().map(|n| &**n).collect();
            kind.check(&t.config, &names).map_err(|m| {
                doc.invalid(
                    &["stages", plans[t.stage].name],
                    format!("target `{}`: {m}", t.name),
                )
            })?;
        }

        let pipeline = Pipeline {
            file: doc.file.to_path_buf(),
            root,
            name: spec.pipeline.name.clone(),
            description: spec.pipeline.description.clone(),
            sources,
            matrix: spec.matrix.clone(),
            stages,
            targets,
            index,
        };
        check_cycles(&pipeline, doc)?;
        Ok(pipeline)
    }

    fn plan_stage<'s>(
        &self,
        name: &'s str,
        st: &'s StageSpec,
        spec: &PipelineSpec,
        root: &Path,
    ) -> Result<StagePlan<'s>, PipelineError> {
        let doc = self.doc;
        check_name(name)
            .map_err(|e| doc.invalid_key(&["stages", name], format!("stage name {e}")))?;
        if self.registry.get(&st.kind).is_none() {
            let hint = did_you_mean(&st.kind, self.registry.names());
            return Err(doc.invalid(
                &["stages", name, "kind"],
                format!("unknown stage kind `{}`{hint}", st.kind),
            ));
        }
        let matrix_keys = || spec.matrix.keys().map(String::as_str);
        let axes: Vec<String> = template::names(&st.target)
            .map_err(|e| doc.invalid(&["stages", name, "target"], e.to_string()))?
            .into_iter()
            .map(str::to_string)
            .collect();
        for a in &axes {
            if !spec.matrix.contains_key(a) {
                return Err(doc.invalid(
                    &["stages", name, "target"],
                    format!(
                        "template names unknown matrix variable `{a}`{}",
                        did_you_mean(a, matrix_keys())
                    ),
                ));
            }
        }
        let is_axis = |a: &str| axes.iter().any(|x| x == a);
        let check_value = |path: &[&str], axis: &str, v: &str| -> Result<(), PipelineError> {
            let values = &spec.matrix[axis];
            if values.iter().any(|x| x == v) {
                Ok(())
            } else {
                Err(doc.invalid(
                    path,
                    format!(
                        "`{v}` is not a value of matrix variable `{axis}`{}",
                        did_you_mean(v, values.iter().map(String::as_str))
                    ),
                ))
            }
        };
        let not_axis = |path: &[&str], a: &str| {
            doc.invalid_key(
                path,
                format!(
                    "`{a}` is not a matrix variable of this stage (its target uses: {}){}",
                    if axes.is_empty() {
                        "none".to_string()
                    } else {
                        axes.join(", ")
                    },
                    did_you_mean(a, axes.iter().map(String::as_str))
                ),
            )
        };

        // The stage's own matrix restriction.
        let mut values = Vec::new();
        for a in &axes {
            match st.matrix.get(a) {
                Some(vs) => {
                    for (i, v) in vs.iter().enumerate() {
                        check_value(&["stages", name, "matrix", a, &i.to_string()], a, v)?;
                    }
                    values.push(vs.clone());
                }
                None => values.push(spec.matrix[a].clone()),
            }
        }
        for a in st.matrix.keys() {
            if !is_axis(a) {
                return Err(not_axis(&["stages", name, "matrix", a], a));
            }
        }
        for (i, ex) in st.exclude.iter().enumerate() {
            for (a, v) in ex {
                let path = ["stages", name, "exclude", &i.to_string(), a.as_str()];
                if !is_axis(a) {
                    return Err(not_axis(&path, a));
                }
                check_value(&path, a, v)?;
            }
        }
        for (a, by) in &st.config_by {
            if !is_axis(a) {
                return Err(not_axis(&["stages", name, "config_by", a], a));
            }
            for v in by.keys() {
                check_value(&["stages", name, "config_by", a, v], a, v)?;
            }
        }

        // Inputs.
        let mut inputs = Vec::new();
        for (iname, raw) in &st.inputs {
            let path = ["stages", name, "inputs", iname.as_str()];
            check_name(iname).map_err(|e| doc.invalid_key(&path, format!("input name {e}")))?;
            let input = parse_input(raw).map_err(|m| doc.invalid(&path, m))?;
            let tpl = match &input.what {
                InputWhat::Target(t) | InputWhat::Source(t) => t,
            };
            for n in template::names(tpl).map_err(|e| doc.invalid(&path, e.to_string()))? {
                if !spec.matrix.contains_key(n) {
                    return Err(doc.invalid(
                        &path,
                        format!(
                            "template names unknown matrix variable `{n}`{}",
                            did_you_mean(n, matrix_keys())
                        ),
                    ));
                }
                if !is_axis(n) {
                    return Err(doc.invalid(
                        &path,
                        format!(
                            "template uses `{{{n}}}`, which is not in this stage's target template `{}`",
                            st.target
                        ),
                    ));
                }
            }
            for (a, vs) in &input.when {
                let wpath = ["stages", name, "inputs", iname.as_str(), "when", a.as_str()];
                if !is_axis(a) {
                    return Err(not_axis(&wpath, a));
                }
                for v in vs {
                    check_value(&wpath, a, v)?;
                }
            }
            inputs.push((iname.clone(), input));
        }

        // Kind-specific fields.
        let is_command = st.kind == "command";
        if is_command && st.command.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(doc.invalid_key(
                &["stages", name, "kind"],
                "a `command` stage needs `command = [\"program\", …]`",
            ));
        }
        if !is_command {
            for (field, set) in [
                ("command", st.command.is_some()),
                ("scripts", !st.scripts.is_empty()),
                ("env", !st.env.is_empty()),
            ] {
                if set {
                    return Err(doc.invalid_key(
                        &["stages", name, field],
                        format!(
                            "`{field}` is only for `command` stages; this stage is `{}`",
                            st.kind
                        ),
                    ));
                }
            }
        }
        for (sname, spath) in &st.scripts {
            check_name(sname)
                .map_err(|e| doc.invalid_key(&["stages", name, "scripts", sname], e.to_string()))?;
            let full = root.join(spath);
            if !full.is_file() {
                return Err(doc.invalid(
                    &["stages", name, "scripts", sname],
                    format!("script `{}` does not exist", full.display()),
                ));
            }
        }

        let resources = resources::resolve(spec.defaults.resources.as_ref(), st.resources.as_ref())
            .map_err(|e| doc.invalid(&["stages", name, "resources", e.key], e.message))?;
        let base_config = match &st.config {
            Some(t) => to_json(t, &["stages", name, "config"], doc)?,
            None => Value::Object(Default::default()),
        };
        let builder_varies = st
            .command
            .iter()
            .flatten()
            .chain(st.env.values())
            .flat_map(|a| template::names(a).unwrap_or_default())
            .any(|n| {
                let input = n.strip_prefix("in.").map(|i| i.trim_end_matches('?'));
                axes.iter().any(|a| a == n)
                    || input
                        .is_some_and(|i| inputs.iter().any(|(k, s)| k == i && !s.when.is_empty()))
            });
        Ok(StagePlan {
            name,
            spec: st,
            axes,
            values,
            inputs,
            resources,
            base_config,
            builder_varies,
        })
    }

    /// `config` with the `config_by` tables of this target's matrix values merged in, shared
    /// between targets that get the same merge.
    fn merged_config(
        &self,
        plan: &StagePlan,
        bindings: &[(Arc<str>, Arc<str>)],
        cache: &mut HashMap<Vec<usize>, Arc<Value>>,
    ) -> Result<Arc<Value>, PipelineError> {
        // Key: for each axis with overrides, the index of the matching value (or MAX).
        let key: Vec<usize> = plan
            .spec
            .config_by
            .iter()
            .map(|(axis, by)| {
                let v = bindings
                    .iter()
                    .find(|(a, _)| **a == **axis)
                    .map(|(_, v)| &**v);
                v.and_then(|v| by.get_index_of(v)).unwrap_or(usize::MAX)
            })
            .collect();
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let mut config = plan.base_config.clone();
        for (axis, by) in &plan.spec.config_by {
            let Some((_, v)) = bindings.iter().find(|(a, _)| **a == **axis) else {
                continue;
            };
            if let Some(t) = by.get(&**v) {
                let over = to_json(t, &["stages", plan.name, "config_by", axis, v], self.doc)?;
                merge(&mut config, over);
            }
        }
        let c = Arc::new(config);
        cache.insert(key, c.clone());
        Ok(c)
    }

    fn builder(
        &self,
        plan: &StagePlan,
        bindings: &[(Arc<str>, Arc<str>)],
        config: &Value,
        inputs: &[usize],
        target: &str,
    ) -> Result<Builder, PipelineError> {
        let Some(argv) = &plan.spec.command else {
            return Ok(Builder::Builtin {
                entry: plan.spec.kind.clone(),
            });
        };
        let resolve = |n: &str| -> Resolve {
            if let Some((_, v)) = bindings.iter().find(|(a, _)| &**a == n) {
                return Resolve::Value(String::from(&**v));
            }
            // `{target}` and `{stage}` are filled by the builder from the derivation, so that
            // a command line naming them is still one command line for the whole stage.
            if matches!(n, "out" | "target" | "stage") {
                return Resolve::Keep;
            }
            if let Some(i) = n.strip_prefix("in.") {
                // `{in.NAME?}`: optional, empty where this target has no such input.
                let (i, optional) = match i.strip_suffix('?') {
                    Some(i) => (i, true),
                    None => (i, false),
                };
                return if inputs.iter().any(|&k| plan.inputs[k].0 == i) {
                    Resolve::Keep
                } else if optional && plan.inputs.iter().any(|(k, _)| k == i) {
                    Resolve::Value(String::new())
                } else {
                    Resolve::Unknown
                };
            }
            if let Some(s) = n.strip_prefix("script.") {
                return if plan.spec.scripts.contains_key(s) {
                    Resolve::Keep
                } else {
                    Resolve::Unknown
                };
            }
            if let Some(path) = n.strip_prefix("config.") {
                // Filled by the builder from the (hashed) config, so that a config change shows
                // up once, as a config change, and not again as a new command line.
                return match lookup(config, path) {
                    Some(_) => Resolve::Keep,
                    None => Resolve::Unknown,
                };
            }
            Resolve::Unknown
        };
        let explain = |n: &str| -> String {
            if let Some(i) = n.strip_prefix("in.") {
                let i = i.trim_end_matches('?');
                let declared = plan.inputs.iter().any(|(k, _)| k == i);
                if declared {
                    return format!(
                        "input `{i}` does not exist for target `{target}` (its `when` excludes it); write `{{in.{i}?}}` to make it optional"
                    );
                }
                return format!(
                    "no input `{i}`{}",
                    did_you_mean(i, plan.inputs.iter().map(|(k, _)| k.as_str()))
                );
            }
            if let Some(s) = n.strip_prefix("script.") {
                return format!(
                    "no script `{s}`{}",
                    did_you_mean(s, plan.spec.scripts.keys().map(String::as_str))
                );
            }
            if let Some(p) = n.strip_prefix("config.") {
                let keys = config_keys(config);
                return format!(
                    "target `{target}` has no config key `{p}`{}",
                    did_you_mean(p, keys.iter().map(String::as_str))
                );
            }
            format!(
                "unknown placeholder `{{{n}}}`: use a matrix variable ({}), `out`, `target`, `in.NAME`, `script.NAME` or `config.KEY`",
                plan.axes.join(", ")
            )
        };
        let render = |s: &str, path: &[&str]| -> Result<String, PipelineError> {
            template::render(s, false, resolve).map_err(|e| match e {
                template::TemplateError::Unknown(n) => self.doc.invalid(path, explain(&n)),
                other => self.doc.invalid(path, other.to_string()),
            })
        };
        let mut out = Vec::with_capacity(argv.len());
        for (i, a) in argv.iter().enumerate() {
            out.push(render(
                a,
                &["stages", plan.name, "command", &i.to_string()],
            )?);
        }
        let mut env = BTreeMap::new();
        for (k, v) in &plan.spec.env {
            env.insert(k.clone(), render(v, &["stages", plan.name, "env", k])?);
        }
        Ok(Builder::Command { argv: out, env })
    }
}

fn parse_input(raw: &toml::Value) -> Result<InputSpec, String> {
    let from_str = |s: &str| match s.strip_prefix("source:") {
        Some(rest) => InputWhat::Source(rest.to_string()),
        None => InputWhat::Target(s.to_string()),
    };
    match raw {
        toml::Value::String(s) => Ok(InputSpec {
            what: from_str(s),
            when: BTreeMap::new(),
        }),
        toml::Value::Table(t) => {
            let allowed = ["target", "source", "when"];
            for k in t.keys() {
                if !allowed.contains(&k.as_str()) {
                    return Err(format!(
                        "unknown key `{k}`{}; expected `target`, `source` or `when`",
                        did_you_mean(k, allowed)
                    ));
                }
            }
            let what = match (t.get("target"), t.get("source")) {
                (Some(toml::Value::String(s)), None) => InputWhat::Target(s.clone()),
                (None, Some(toml::Value::String(s))) => InputWhat::Source(s.trim_start_matches("source:").to_string()),
                (Some(_), Some(_)) => return Err("give `target` or `source`, not both".into()),
                _ => return Err("expected `target = \"…\"` or `source = \"…\"` (a string)".into()),
            };
            let mut when = BTreeMap::new();
            match t.get("when") {
                None => {}
                Some(toml::Value::Table(w)) => {
                    for (a, v) in w {
                        let vs = match v {
                            toml::Value::String(s) => vec![s.clone()],
                            toml::Value::Array(a) => a
                                .iter()
                                .map(|x| x.as_str().map(str::to_string))
                                .collect::<Option<Vec<_>>>()
                                .ok_or("`when` values are strings or lists of strings")?,
                            _ => return Err("`when` values are strings or lists of strings".into()),
                        };
                        when.insert(a.clone(), vs);
                    }
                }
                Some(_) => return Err("`when` is a table, e.g. `when = { variant = \"student\" }`".into()),
            }
            Ok(InputSpec { what, when })
        }
        _ => Err("an input is a target template (\"{dataset}-prep\"), \"source:NAME\", or a table { target = …, when = … }".into()),
    }
}

fn render_with(tpl: &str, bindings: &[(Arc<str>, Arc<str>)]) -> Result<String, String> {
    template::render(tpl, true, |n| {
        match bindings.iter().find(|(a, _)| &**a == n) {
            Some((_, v)) => Resolve::Value(String::from(&**v)),
            None => Resolve::Unknown,
        }
    })
    .map_err(|e| e.to_string())
}

fn applies(when: &BTreeMap<String, Vec<String>>, bindings: &[(Arc<str>, Arc<str>)]) -> bool {
    when.iter().all(|(axis, values)| {
        bindings
            .iter()
            .find(|(a, _)| **a == **axis)
            .is_some_and(|(_, v)| values.iter().any(|x| **x == **v))
    })
}

fn excluded(spec: &StageSpec, bindings: &[(Arc<str>, Arc<str>)]) -> bool {
    spec.exclude.iter().any(|ex| {
        ex.iter()
            .all(|(a, v)| bindings.iter().any(|(ba, bv)| **ba == **a && **bv == **v))
    })
}

/// The cartesian product of `values`, first axis slowest.
fn combinations(values: &[Vec<String>]) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = vec![Vec::new()];
    for vs in values {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                vs.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push(v.as_str());
                    p
                })
            })
            .collect();
    }
    out
}

/// Converts a TOML table to normalised JSON; datetimes become strings, NaN and infinities are
/// located errors.
fn to_json(t: &toml::Table, path: &[&str], doc: &Doc) -> Result<Value, PipelineError> {
    let mut v = serde_json::to_value(t).map_err(|e| doc.invalid(path, e.to_string()))?;
    fn check(t: &toml::Value, sub: &mut Vec<String>) -> Result<(), Vec<String>> {
        match t {
            toml::Value::Float(f) if !f.is_finite() => Err(sub.clone()),
            toml::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    sub.push(i.to_string());
                    check(x, sub)?;
                    sub.pop();
                }
                Ok(())
            }
            toml::Value::Table(m) => {
                for (k, x) in m {
                    sub.push(k.clone());
                    check(x, sub)?;
                    sub.pop();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    for (k, x) in t {
        let mut sub = vec![k.clone()];
        if let Err(at) = check(x, &mut sub) {
            let mut full: Vec<&str> = path.to_vec();
            full.extend(at.iter().map(String::as_str));
            return Err(doc.invalid(&full, "only finite numbers can be hashed (no nan or inf)"));
        }
    }
    canonical::normalise(&mut v).map_err(|e| doc.invalid(path, e.to_string()))?;
    Ok(v)
}

/// Deep merge: tables merge key by key, anything else is replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The value at dotted `path` in `v`.
pub fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Every dotted key path of `v`'s leaves (for suggestions).
fn config_keys(v: &Value) -> Vec<String> {
    fn go(v: &Value, prefix: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    go(x, p, out);
                }
            }
            _ => out.push(prefix),
        }
    }
    let mut out = Vec::new();
    go(v, String::new(), &mut out);
    out
}

/// Fails with the first cycle of target inputs, located at the stage that closes it.
fn check_cycles(p: &Pipeline, doc: &Doc) -> Result<(), PipelineError> {
    // Iterative three-colour DFS, so that deep pipelines cannot overflow the stack.
    let n = p.targets.len();
    let mut colour = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let deps = |i: usize| -> Vec<usize> {
        p.targets[i]
            .inputs
            .iter()
            .filter_map(|(_, x)| match x {
                TargetInput::Target(j) => Some(*j),
                TargetInput::Source(_) => None,
            })
            .collect()
    };
    for start in 0..n {
        if colour[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> = vec![(start, deps(start))];
        colour[start] = 1;
        while let Some((node, rest)) = stack.last_mut() {
            match rest.pop() {
                Some(next) if colour[next] == 1 => {
                    let pos = stack.iter().position(|(x, _)| *x == next).unwrap_or(0);
                    let mut cycle: Vec<String> = stack[pos..]
                        .iter()
                        .map(|(x, _)| p.targets[*x].name.clone())
                        .collect();
                    cycle.push(p.targets[next].name.clone());
                    let closing = &p.targets[stack.last().map_or(next, |(x, _)| *x)];
                    return Err(PipelineError::Cycle {
                        loc: doc.loc(&["stages", &p.stages[closing.stage].name, "inputs"]),
                        cycle,
                    });
                }
                Some(next) if colour[next] == 0 => {
                    colour[next] = 1;
                    let d = deps(next);
                    stack.push((next, d));
                }
                Some(_) => {}
                None => {
                    colour[*node] = 2;
                    stack.pop();
                }
            }
        }
    }
    Ok(())
}
