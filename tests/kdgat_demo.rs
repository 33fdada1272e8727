//! The KD-GAT demo end to end, through the real binary: `pipelines/kdgat.toml` realized on the
//! shipped `data/demo` sample (quick profile) into one temporary store shared by these tests.
//! It checks real learning, reruns, selective rebuilds, determinism, `why-depends` on the
//! real pipeline, the metrics tables (snapshots) and the HTML report in headless Chromium.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

const EVALS: &str = "*-demo-eval";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One realized store for every test here (training it once takes ~30 s).
struct Demo {
    dir: tempfile::TempDir,
}

impl Demo {
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// kdbuild against the shared store with `pipeline` (default: the repository's).
    fn cmd_with(&self, pipeline: &Path) -> Command {
        let mut c = Command::new(common::kdbuild_bin());
        c.current_dir(self.dir.path())
            .env("KDBUILD_STORE", self.store())
            .env("KDBUILD_PIPELINE", pipeline)
            .env_remove("KDBUILD_DATA");
        c
    }

    fn run_with(&self, pipeline: &Path, args: &[&str]) -> Output {
        let o = self.cmd_with(pipeline).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "kdbuild {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn run(&self, args: &[&str]) -> String {
        let o = self.run_with(&repo().join("pipelines/kdgat.toml"), args);
        String::from_utf8(o.stdout).unwrap()
    }

    fn builds(&self) -> BTreeMap<String, i64> {
        let db = rusqlite::Connection::open(self.store().join("db.sqlite")).unwrap();
        let mut st = db
            .prepare(
                "SELECT target, COUNT(*) FROM builds WHERE outcome = 'succeeded' GROUP BY target",
            )
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn metrics(&self, target: &str) -> Value {
        let p = self
            .dir
            .path()
            .join("results")
            .join(target)
            .join("metrics.json");
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    }
}

fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let d = Demo {
            dir: tempfile::tempdir().unwrap(),
        };
        d.run(&["realize", EVALS, "-j", "2"]);
        d
    })
}

/// Runs `f` with a lock held, for the tests that add builds to the shared store and count
/// them.
fn serial<T>(f: impl FnOnce() -> T) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

fn test_splits(m: &Value) -> Vec<String> {
    m["models"]["gat"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|s| *s != "val")
        .cloned()
        .collect()
}

#[test]
fn the_demo_learns_and_the_student_keeps_up() {
    let d = demo();
    let teacher = d.metrics("teacher-demo-eval");
    let student = d.metrics("student-demo-eval");
    let splits = test_splits(&teacher);
    assert!(!splits.is_empty());
    for split in &splits {
        let f1 = |m: &Value| m["models"]["gat"][split]["f1"].as_f64().unwrap();
        let (t, s) = (f1(&teacher), f1(&student));
        assert!(t >= 0.95, "teacher GAT test F1 on {split}: {t}");
        assert!(
            (t - s).abs() <= 0.03,
            "student {s} vs teacher {t} on {split}"
        );
        assert!(
            teacher["models"]["gat"][split]["n_pos"].as_u64().unwrap() > 0,
            "real attacks in {split}"
        );
    }
    // Every output the issue names is there.
    let store = d.dir.path().join("results");
    for t in [
        "teacher-demo-eval",
        "student-demo-eval",
        "student_nokd-demo-eval",
    ] {
        for f in ["metrics.json", "metrics.csv", "curves.json"] {
            assert!(store.join(t).join(f).is_file(), "{t}/{f}");
        }
    }
    let gat = d.run(&["path-info", "teacher-demo-gat", "--json"]);
    let gat: Value = serde_json::from_str(&gat).unwrap();
    let dir = PathBuf::from(gat[0]["path"].as_str().unwrap());
    for f in [
        "model.safetensors",
        "config.json",
        "train_log.csv",
        "metrics.json",
    ] {
        assert!(dir.join(f).is_file(), "teacher-demo-gat/{f}");
    }
}

#[test]
fn a_rerun_is_a_no_op() {
    let d = demo();
    serial(|| {
        let before = d.builds();
        let out = d.run_with(&repo().join("pipelines/kdgat.toml"), &["realize", EVALS]);
        assert_eq!(d.builds(), before);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("building"));
    });
}

#[test]
fn changing_one_student_key_rebuilds_only_the_student_chain() {
    let d = demo();
    serial(|| {
        let text = std::fs::read_to_string(repo().join("pipelines/kdgat.toml")).unwrap();
        let needle = "[stages.gat]";
        let at = text.find(needle).unwrap();
        let gat_section_end = text[at..].find("\n[stages.").map(|e| at + e).unwrap();
        let mut changed = text.clone();
        let line = "config_by.variant.student = { size = \"small\", kd = true }";
        let pos = text[at..gat_section_end]
            .find(line)
            .map(|p| at + p)
            .expect("student line in [stages.gat]");
        changed.replace_range(
            pos..pos + line.len(),
            "config_by.variant.student = { size = \"small\", kd = true, lr = 0.002 }",
        );
        let changed = changed.replace(
            "root = \"..\"",
            &format!("root = {:?}", repo().display().to_string()),
        );
        let file = d.dir.path().join("changed.toml");
        std::fs::write(&file, changed).unwrap();

        let dry = d.run_with(&file, &["realize", "-n", EVALS]);
        let dry = String::from_utf8_lossy(&dry.stdout).into_owned();
        let listed: Vec<&str> = dry
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .map(str::trim)
            .collect();
        assert_eq!(
            listed,
            vec!["student-demo-gat", "student-demo-dqn", "student-demo-eval"],
            "{dry}"
        );
        assert!(
            dry.contains("config key `lr` changed: (absent) -> 0.002"),
            "{dry}"
        );

        let before = d.builds();
        d.run_with(&file, &["realize", EVALS, "--no-link"]);
        let after = d.builds();
        let rebuilt: Vec<&String> = after
            .keys()
            .filter(|t| after.get(*t) != before.get(*t))
            .collect();
        assert_eq!(
            rebuilt,
            vec!["student-demo-dqn", "student-demo-eval", "student-demo-gat"]
        );
    });
}

#[test]
fn a_derivation_built_twice_gives_byte_identical_metrics() {
    let d = demo();
    serial(|| {
        let info: Value =
            serde_json::from_str(&d.run(&["path-info", "teacher-demo-gat", "--json"])).unwrap();
        let dir = PathBuf::from(info[0]["path"].as_str().unwrap());
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let (metrics, model) = (read("metrics.json"), read("model.safetensors"));
        let before = d.builds()["teacher-demo-gat"];
        d.run(&["realize", "--rebuild", "teacher-demo-gat", "--no-link"]);
        assert_eq!(
            d.builds()["teacher-demo-gat"],
            before + 1,
            "it was built again"
        );
        assert_eq!(
            read("metrics.json"),
            metrics,
            "metrics.json differs after a rebuild"
        );
        assert_eq!(
            read("model.safetensors"),
            model,
            "weights differ after a rebuild"
        );
    });
}

#[test]
fn why_depends_follows_distillation_and_reaches_the_dataset() {
    let d = demo();
    let out = d.run(&["why-depends", "student-demo-eval", "teacher-demo-gat"]);
    assert_eq!(
        out.trim(),
        "student-demo-eval --gat--> student-demo-gat --teacher--> teacher-demo-gat"
    );
    let out = d.run(&["why-depends", "student-demo-eval", "source:demo"]);
    assert_eq!(
        out.trim(),
        "student-demo-eval --data--> demo-preprocess --raw--> source:demo"
    );
    // At run time the evaluation refers to the data directly; at build time it also reaches it
    // through every model it evaluated.
    let runtime = d.run(&[
        "why-depends",
        "--all",
        "student-demo-eval",
        "demo-preprocess",
    ]);
    assert_eq!(
        runtime.trim(),
        "student-demo-eval --data--> demo-preprocess"
    );
    let build = d.run(&[
        "why-depends",
        "--all",
        "--build",
        "student-demo-eval",
        "demo-preprocess",
    ]);
    assert!(
        build.lines().count() >= 4,
        "through vgae, gat, dqn and directly: {build}"
    );
}

// ---------------------------------------------------------------- metrics tables

/// The table as cells (`kdbuild metrics` separates columns by two or more spaces), every
/// number replaced by `#`: the snapshot pins the rows, columns and non-numeric cells, while
/// the values themselves are checked against `metrics.json` below.
fn redact(table: &str) -> String {
    table
        .lines()
        .map(|l| {
            let mut cells = Vec::new();
            let mut cur = String::new();
            let mut spaces = 0;
            for ch in l.chars() {
                if ch == ' ' {
                    spaces += 1;
                    continue;
                }
                if spaces >= 2 && !cur.is_empty() {
                    cells.push(std::mem::take(&mut cur));
                } else if spaces == 1 {
                    cur.push(' ');
                }
                spaces = 0;
                cur.push(ch);
            }
            if !cur.is_empty() {
                cells.push(cur);
            }
            cells
                .iter()
                .map(|c| {
                    if c.parse::<f64>().is_ok() {
                        "#".to_string()
                    } else if c.chars().all(|x| x == '-') {
                        "---".to_string()
                    } else {
                        c.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn redact_markdown(md: &str) -> String {
    md.lines()
        .map(|l| {
            l.split('|')
                .map(|c| {
                    let t = c.trim();
                    if !t.is_empty() && t.parse::<f64>().is_ok() {
                        " # ".to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Compares with `tests/snapshots/<name>`; `KDBUILD_UPDATE_SNAPSHOTS=1` rewrites it.
fn snapshot(name: &str, actual: &str) {
    let path = repo().join("tests/snapshots").join(name);
    if std::env::var("KDBUILD_UPDATE_SNAPSHOTS").is_ok() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with KDBUILD_UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "snapshot {name} differs (KDBUILD_UPDATE_SNAPSHOTS=1 to accept)"
    );
}

#[test]
fn metrics_table_and_markdown_snapshots() {
    let d = demo();
    let args = [
        "metrics", EVALS, "--metric", "f1", "--metric", "mcc", "--model", "gat", "--model",
        "fusion",
    ];
    let table = d.run(&args);
    snapshot("metrics_table.txt", &redact(&table));
    let mut md_args = args.to_vec();
    md_args.extend(["--format", "markdown"]);
    let md = d.run(&md_args);
    snapshot("metrics_markdown.md", &redact_markdown(&md));

    // The redacted values are the ones in metrics.json, as the table prints them.
    let json: Value = serde_json::from_str(&d.run(&[
        "metrics", EVALS, "--metric", "f1", "--metric", "mcc", "--model", "gat", "--model",
        "fusion", "--format", "json",
    ]))
    .unwrap();
    for row in json.as_array().unwrap() {
        let target = row["target"].as_str().unwrap();
        let m = d.metrics(target);
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("{target} ")))
            .unwrap();
        for (col, v) in row["metrics"].as_object().unwrap() {
            let parts: Vec<&str> = col.split('/').collect();
            let from_file = &m["models"][parts[0]][parts[1]][parts[2]];
            assert_eq!(v, from_file, "{target} {col}");
            let shown = match v.as_f64() {
                Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
                Some(x) => format!("{x:.4}"),
                None => "null".into(),
            };
            assert!(
                line.split_whitespace().any(|c| c == shown),
                "{shown} in `{line}`"
            );
        }
    }

    let diff = d.run(&[
        "metrics",
        "--diff",
        "teacher-demo-eval",
        "student-demo-eval",
        "--metric",
        "f1",
        "--format",
        "csv",
    ]);
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(
        lines[0],
        "model/split/metric,teacher-demo-eval,student-demo-eval,delta"
    );
    assert!(lines.len() >= 3, "{diff}");
}

// ---------------------------------------------------------------- the HTML report

/// Hosts of Chromium's own background requests (sign-in, network time, search preconnect),
/// which happen whatever the page is; anything else reaching the proxy came from the page.
const CHROMIUM_BACKGROUND: &[&str] = &[
    "accounts.google.com:443",
    "www.google.com:443",
    "clients2.google.com/time/",
    "update.googleapis.com",
    "optimizationguide-pa.googleapis.com",
];

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(b))
                    .find(|p| p.is_file())
            })
        })
}

/// Headless Chromium on `page`, with every non-local request sent to a proxy on loopback
/// that counts connections, so a page that fetched anything would be caught.
fn headless(
    browser: &Path,
    page: &Path,
    extra: &[&str],
    proxy_port: u16,
    profile: &Path,
) -> Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            &format!("--proxy-server=http://127.0.0.1:{proxy_port}"),
            "--proxy-bypass-list=<-loopback>",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium")
}

#[test]
fn the_report_renders_in_headless_chromium_with_no_external_request() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is missing in CI"
        );
        eprintln!("SKIPPED: no chromium on PATH");
        return;
    };
    let d = demo();
    let page = d.dir.path().join("report.html");
    d.run(&[
        "report",
        EVALS,
        "-o",
        page.to_str().unwrap(),
        "--title",
        "KD-GAT demo",
    ]);
    let html = std::fs::read_to_string(&page).unwrap();
    // Static: nothing in the file points outside it.
    for bad in [
        "<script",
        "<link",
        "<img",
        "<iframe",
        "@import",
        "url(",
        "src=\"http",
        "href=\"http",
    ] {
        assert!(!html.contains(bad), "the report contains `{bad}`");
    }

    // A proxy on loopback that records the first line of every request: anything the page
    // fetched would arrive here.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 512];
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let n = s.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            log.lock().unwrap().push(line);
        }
    });
    // The page's requests, leaving out Chromium's own background traffic to its services,
    // which no flag fully silences (measured: sign-in, network time, search preconnects).
    let page_requests = || -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            // A connection that sends nothing is a speculative preconnect, not a request.
            .filter(|l| !l.is_empty() && !CHROMIUM_BACKGROUND.iter().any(|h| l.contains(h)))
            .cloned()
            .collect()
    };
    let profile = tempfile::tempdir().unwrap();

    // The harness catches a page that fetches something: a control page with one image.
    let control = d.dir.path().join("control.html");
    std::fs::write(
        &control,
        "<html><body><img src=\"http://kdbuild-control.invalid/x.png\"></body></html>",
    )
    .unwrap();
    headless(&browser, &control, &["--dump-dom"], port, profile.path());
    let caught = page_requests();
    assert!(
        caught.iter().any(|l| l.contains("kdbuild-control.invalid")),
        "the proxy must see the control page's request: {caught:?}"
    );
    seen.lock().unwrap().clear();

    let dom = headless(&browser, &page, &["--dump-dom"], port, profile.path());
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let shot = d.dir.path().join("report.png");
    let out = headless(
        &browser,
        &page,
        &[
            "--window-size=1280,4200",
            &format!("--screenshot={}", shot.display()),
        ],
        port,
        profile.path(),
    );
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        page_requests(),
        Vec::<String>::new(),
        "the report made network requests"
    );

    // DOM: the tables have their rows, every plot has drawn something.
    let section = |id: &str| {
        let start = dom
            .find(&format!(" id=\"{id}\""))
            .unwrap_or_else(|| panic!("section {id}"));
        let end = dom[start..].find("</section>").unwrap() + start;
        &dom[start..end]
    };
    let metrics = section("metrics");
    assert_eq!(
        metrics.matches("<tr>").count(),
        1 + 3,
        "header + 3 evaluations"
    );
    assert_eq!(
        section("models").matches("<tr>").count(),
        1 + 9,
        "header + 9 trained models"
    );
    assert!(section("dag").contains("<svg"), "the DAG");
    assert!(section("timeline").contains("<rect"), "the timeline");
    let charts: Vec<&str> = dom
        .split("<svg class=\"chart")
        .skip(1)
        .map(|s| &s[..s.find("</svg>").unwrap()])
        .collect();
    assert!(
        charts.len() >= 3 * (4 + 2 + 3),
        "training curves, ROC/PR, confusion matrices: {}",
        charts.len()
    );
    for c in &charts {
        let drawn = c.matches("<polyline").count()
            + c.matches("<path").count()
            + c.matches("<rect").count();
        assert!(drawn >= 2, "a blank chart: {}", &c[..c.len().min(200)]);
    }
    for t in [
        "teacher-demo-eval",
        "student-demo-eval",
        "student_nokd-demo-eval",
    ] {
        let s = section(&format!("t-{t}"));
        assert!(s.contains("class=\"provenance\""), "{t} provenance");
        assert!(s.contains("ROC"), "{t} ROC");
        assert!(s.contains("Confusion matrices"), "{t} confusion");
    }

    // Screenshot: mostly white page, with the DAG's green and the plots' blue really painted.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let near = |p: &[u8], c: [u8; 3]| (0..3).all(|i| (p[i] as i32 - c[i] as i32).abs() <= 12);
    let count = |c: [u8; 3]| pixels.iter().filter(|p| near(p, c)).count();
    let non_white = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|&v| v < 235))
        .count();
    assert!(
        non_white * 100 > pixels.len() * 3,
        "the page is nearly blank: {non_white} of {}",
        pixels.len()
    );
    assert!(count([0xc8, 0xe6, 0xc9]) > 500, "built nodes of the DAG");
    assert!(count([31, 119, 180]) > 200, "plot lines");

    // The README shows this screenshot.
    if std::env::var("KDBUILD_UPDATE_SCREENSHOT").is_ok() {
        std::fs::create_dir_all(repo().join("docs")).unwrap();
        std::fs::copy(&shot, repo().join("docs/report.png")).unwrap();
    }
}
