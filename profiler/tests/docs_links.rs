//! The user's documentation holds together: README.md and every `docs/*.md` are checked for
//! links whose target file or heading does not exist, every `docs/*.md` must be reachable from
//! README.md, repository paths named in inline code (`scripts/demo`) exist, README.md stays a
//! page a user reads (at most 320 lines), and no line reads like a lab notebook (dates, sessions,
//! issue numbers, paths outside the repository).
//!
//! Markdown is parsed with pulldown-cmark, so links in code blocks are not links and reference
//! links, autolinks and images are. Heading anchors follow GitHub's rules (lowercase; letters,
//! digits, `-`, `_` kept, spaces become `-`, other characters dropped; a repeated slug gets `-1`,
//! `-2`, …).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Component, Path, PathBuf},
};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

const README_MAX_LINES: usize = 320;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("profiler/ has a parent")
        .to_path_buf()
}

/// README.md and docs/*.md, relative to the repository root, README first.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .map(|p| p.strip_prefix(root).expect("under the root").to_path_buf())
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    docs.insert(0, PathBuf::from("README.md"));
    docs
}

struct Link {
    dest: String,
    line: usize,
}

struct Parsed {
    links: Vec<Link>,
    anchors: BTreeSet<String>,
    /// Inline code spans (not code blocks), with their line.
    code_spans: Vec<Link>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].bytes().filter(|&b| b == b'\n').count() + 1
}

/// GitHub's heading anchor (github-slugger) for the heading's plain text.
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .flat_map(char::to_lowercase)
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn parse(text: &str) -> Parsed {
    let mut links = Vec::new();
    let mut code_spans = Vec::new();
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut heading: Option<String> = None;
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_FOOTNOTES;
    for (event, range) in Parser::new_ext(text, options).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let n = seen.entry(base.clone()).or_insert(0);
                anchors.insert(if *n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                });
                *n += 1;
            }
            Event::Text(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
                code_spans.push(Link {
                    dest: t.to_string(),
                    line: line_of(text, range.start),
                });
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                links.push(Link {
                    dest: dest_url.to_string(),
                    line: line_of(text, range.start),
                });
            }
            _ => {}
        }
    }
    Parsed {
        links,
        anchors,
        code_spans,
    }
}

fn is_external(dest: &str) -> bool {
    dest.contains("://") || dest.starts_with("mailto:")
}

/// `base` joined with `rel`, normalised; `None` when it leaves the repository.
fn resolve(base_dir: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in base_dir.join(rel).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[test]
fn links_resolve_and_every_doc_is_linked_from_the_readme() {
    let root = repo_root();
    let docs = documents(&root);
    let texts: BTreeMap<PathBuf, String> = docs
        .iter()
        .map(|d| {
            let text = fs::read_to_string(root.join(d))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", d.display()));
            (d.clone(), text)
        })
        .collect();
    let parsed: BTreeMap<&PathBuf, Parsed> = texts.iter().map(|(d, t)| (d, parse(t))).collect();

    let mut problems = Vec::new();
    let mut linked_from_readme = BTreeSet::new();
    for (doc, p) in &parsed {
        let dir = doc.parent().unwrap_or(Path::new(""));
        for link in &p.links {
            if is_external(&link.dest) {
                continue;
            }
            let (path, anchor) = match link.dest.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (link.dest.as_str(), None),
            };
            let where_ = format!("{}:{}: link `{}`", doc.display(), link.line, link.dest);
            let target = if path.is_empty() {
                (*doc).clone()
            } else {
                let Some(t) = resolve(dir, path) else {
                    problems.push(format!("{where_} leaves the repository"));
                    continue;
                };
                t
            };
            if !root.join(&target).exists() {
                problems.push(format!("{where_}: {} does not exist", target.display()));
                continue;
            }
            if doc.as_path() == Path::new("README.md") {
                linked_from_readme.insert(target.clone());
            }
            let Some(anchor) = anchor else { continue };
            if target.extension().is_none_or(|x| x != "md") {
                continue;
            }
            let anchors = parsed.get(&target).map_or_else(
                || parse(&fs::read_to_string(root.join(&target)).unwrap_or_default()).anchors,
                |p| p.anchors.clone(),
            );
            if !anchors.contains(anchor) {
                problems.push(format!(
                    "{where_}: no heading with anchor #{anchor} in {}",
                    target.display()
                ));
            }
        }
    }
    for doc in docs.iter().skip(1) {
        if !linked_from_readme.contains(doc) {
            problems.push(format!("{} is not linked from README.md", doc.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "broken documentation links:\n{}",
        problems.join("\n")
    );
}

/// Top-level directories of the repository whose paths the documents name in inline code.
const REPO_DIRS: &[&str] = &[
    "profiler/",
    "profiler-ebpf/",
    "profiler-common/",
    "scripts/",
    "deploy/",
    "benches/",
    "xtask/",
    "docs/",
    ".ci/",
    "fuzz/",
];

/// What a run makes under `fuzz/` (not in the repository).
const GENERATED: &[&str] = &["fuzz/work", "fuzz/logs", "fuzz/target"];

/// Repository paths named in inline code (`scripts/demo`, `deploy/daemonset.yaml`), without
/// placeholders such as `<id>` or globs.
fn repository_paths(code: &str) -> impl Iterator<Item = &str> {
    code.split_whitespace()
        .filter(|t| REPO_DIRS.iter().any(|d| t.starts_with(d)))
        .map(|t| t.trim_end_matches(['.', ',', ';', ':', ')']))
        .filter(|t| !t.contains(['<', '*', '{', '…', '|']))
        .filter(|t| !GENERATED.iter().any(|g| t.starts_with(g)))
}

#[test]
fn repository_paths_named_in_the_docs_exist() {
    let root = repo_root();
    let mut problems = Vec::new();
    for doc in documents(&root) {
        let text = fs::read_to_string(root.join(&doc)).expect("readable");
        for span in parse(&text).code_spans {
            for path in repository_paths(&span.dest) {
                if !root.join(path).exists() {
                    problems.push(format!(
                        "{}:{}: `{path}` does not exist",
                        doc.display(),
                        span.line
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the documents name paths that are not in the repository (moved or renamed?):\n{}",
        problems.join("\n")
    );
}

#[test]
fn readme_is_short() {
    let text = fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let lines = text.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; keep it at most {README_MAX_LINES} and move reference text to docs/"
    );
}

/// A date such as 2026-11-28, unless it names a pinned toolchain (`nightly-2026-05-19`).
fn has_date(line: &str) -> bool {
    let b = line.as_bytes();
    (0..b.len().saturating_sub(9)).any(|i| {
        let w = &b[i..i + 10];
        let digits = |r: std::ops::Range<usize>| w[r].iter().all(u8::is_ascii_digit);
        let before_ok = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let after_ok = b.get(i + 10).is_none_or(|c| !c.is_ascii_digit());
        digits(0..4)
            && w[4] == b'-'
            && digits(5..7)
            && w[7] == b'-'
            && digits(8..10)
            && (w[0..2] == *b"19" || w[0..2] == *b"20")
            && before_ok
            && after_ok
            && !line[..i].ends_with("nightly-")
    })
}

/// "issue 12", "issue #12", "issues 4 and 6".
fn has_issue_number(line: &str) -> bool {
    let lower = line.to_lowercase();
    lower.match_indices("issue").any(|(i, _)| {
        let rest = lower[i + "issue".len()..].trim_start_matches('s');
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let rest = rest.strip_prefix('#').unwrap_or(rest);
        rest.starts_with(|c: char| c.is_ascii_digit())
    })
}

fn diary_pattern(line: &str) -> Option<&'static str> {
    let lower = line.to_lowercase();
    if lower.contains("this session") {
        return Some("a session");
    }
    if lower.contains("../shared") {
        return Some("a path outside the repository");
    }
    if lower.contains("colleague") || lower.contains("engineers'") {
        return Some("people");
    }
    if has_issue_number(line) {
        return Some("an issue number");
    }
    if has_date(line) {
        return Some("a date");
    }
    None
}

#[test]
fn no_lab_notebook_lines() {
    let root = repo_root();
    let mut problems = Vec::new();
    for doc in documents(&root) {
        let text = fs::read_to_string(root.join(&doc)).expect("readable");
        for (n, line) in text.lines().enumerate() {
            if let Some(what) = diary_pattern(line) {
                problems.push(format!("{}:{}: {what}: {line}", doc.display(), n + 1));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "describe the software as it is (no dates, sessions, people, issue numbers, paths outside \
         the repository):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checks_themselves() {
    assert_eq!(slug("The lab: `cowprof bench`"), "the-lab-cowprof-bench");
    assert_eq!(slug("Exit codes"), "exit-codes");
    assert_eq!(slug("Scrape cost and memory"), "scrape-cost-and-memory");
    assert_eq!(
        slug("`record --json` / JSON lines"),
        "record---json--json-lines"
    );
    let p = parse("# A\n## A\n[x](#a-1) [y](docs/x.md#b)\n```\n[not](a link)\n```\n");
    assert_eq!(
        p.anchors,
        BTreeSet::from(["a".to_owned(), "a-1".to_owned()])
    );
    assert_eq!(
        p.links
            .iter()
            .map(|l| (l.dest.as_str(), l.line))
            .collect::<Vec<_>>(),
        [("#a-1", 3), ("docs/x.md#b", 3)]
    );
    assert!(has_date("run on 2026-11-28 here"));
    assert!(!has_date("built against nightly-2026-05-19's LLVM"));
    assert!(!has_date("sizes 1024-2048-4096"));
    assert!(has_issue_number("see issue 4"));
    assert!(has_issue_number("issue #12"));
    assert!(!has_issue_number("an issue with the kernel"));
    assert_eq!(
        diary_pattern("see ../shared/notes"),
        Some("a path outside the repository")
    );
    assert_eq!(diary_pattern("measured in this session"), Some("a session"));
    assert_eq!(
        resolve(Path::new("docs"), "../README.md"),
        Some(PathBuf::from("README.md"))
    );
    assert_eq!(resolve(Path::new(""), "../shared/x.md"), None);
}
