//! The code blocks of `README.md` and `docs/*.md` marked runnable run as
//! written, and print what the page says they print (issue 35), so an
//! example cannot rot. `docs/README.md` says how a block is marked:
//! ` ```sh run `, ` ```python run `, ` ```LANG file=PATH ` (written for the
//! blocks after it) and ` ```text output ` (what the block before printed
//! on stdout; `…` stands for any text within a line).
//!
//! Each file's blocks run in order in `target/docs/work/<file>/`, which
//! stands for the root of a clone (`guest-sdk/` and `wit/` link to the
//! repository's), with this build's `cerebelum` and the `.venv`'s
//! `python` first on `PATH` and no `CEREBELUM_*` variable set. Rust
//! crates of the pages build into `target/docs/cargo`, kept between runs.

use cerebelum_harness as common;

use common::{bin, cache_dir, python, root};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A block may build a crate for wasm32-wasip2 from nothing (a minute
/// or two on 2 cores); one that is still running after this has hung.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// Every page, with the number of runnable blocks it has at least: a page
/// whose blocks lost their `run` mark fails here instead of going untested.
macro_rules! pages {
    ($($test:ident: $file:literal runs $min:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($file, $min);
            }
        )*
        const PAGES: &[&str] = &[$($file),*];
    };
}

pages! {
    readme: "README.md" runs 2,
    docs_index: "docs/README.md" runs 0,
    python_md: "docs/python.md" runs 2,
    rust_md: "docs/rust.md" runs 1,
    cli_md: "docs/cli.md" runs 1,
    workers_md: "docs/workers.md" runs 1,
    composition_md: "docs/composition.md" runs 1,
    schedules_and_triggers_md: "docs/schedules-and-triggers.md" runs 1,
    api_and_security_md: "docs/api-and-security.md" runs 1,
    operations_md: "docs/operations.md" runs 1,
    console_md: "docs/console.md" runs 0,
    architecture_md: "docs/architecture.md" runs 0,
    benchmarks_md: "docs/benchmarks.md" runs 0,
}

fn check(rel: &str, min: usize) {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    let name = rel.trim_end_matches(".md").replace('/', "-");
    match run_page(&name, &text) {
        Ok(ran) => assert!(
            ran >= min,
            "{rel}: {ran} runnable blocks, fewer than the {min} it had"
        ),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn every_page_of_docs_is_run() {
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let rel = format!("docs/{}", path.file_name().unwrap().to_str().unwrap());
            assert!(
                PAGES.contains(&rel.as_str()),
                "{rel} has no test: add it to `pages!` in tests/docs.rs"
            );
        }
    }
}

/// Issue 35: the README is the user's first page; topics go to docs/.
#[test]
fn the_readme_stays_short() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: move a topic to docs/"
    );
}

/// The runner fails on each way a page can be wrong, and passes a page
/// that is right (so the tests above can fail).
#[test]
fn a_broken_block_fails_its_page() {
    let broken = [
        ("a failing command", "```sh run\ntrue\nexit 3\n```\n"),
        (
            "other output",
            "```sh run\necho hello\n```\n\n```text output\nbye\n```\n",
        ),
        (
            "more output",
            "```sh run\necho hello; echo again\n```\n\n```text output\nhello\n```\n",
        ),
        (
            "a Python error",
            "```python run\nraise SystemExit('no')\n```\n",
        ),
        (
            "a file written for nothing",
            "```python file=app.py\nimport sys; sys.exit(1)\n```\n\n```sh run\npython app.py\n```\n",
        ),
        ("a misspelt mark", "```sh runn\necho hello\n```\n"),
        (
            "a language it cannot run",
            "```rust run\nfn main() {}\n```\n",
        ),
        (
            "output after nothing",
            "```sh\ntrue\n```\n\n```text output\nx\n```\n",
        ),
        ("an unclosed block", "```sh run\ntrue\n"),
    ];
    for (i, (what, page)) in broken.iter().enumerate() {
        let result = run_page(&format!("selftest-broken-{i}"), page);
        assert!(result.is_err(), "{what}: the page passed: {result:?}");
    }
    let right = "\
Text, and a block that is not run:

```sh
exit 1
```

```python file=greet.py
print('hello from', __import__('sys').argv[1])
```

  ```sh run
  python greet.py web-1
  sleep 600 &   # left running: killed when the block ends
  echo \"started ex_0123 at 10:00\"
  ```

  ```text output
  hello from web-1
  started ex_… at …
  ```
";
    let started = Instant::now();
    assert_eq!(run_page("selftest-right", right), Ok(1));
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// One fenced block of a page.
#[derive(Debug)]
struct Block {
    /// 1-based line of its opening fence.
    line: usize,
    lang: String,
    run: bool,
    output: bool,
    file: Option<String>,
    body: String,
}

/// The fenced blocks of `markdown` (an indented fence, as in a list,
/// has its indentation taken off its lines).
fn blocks(name: &str, markdown: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let mut block = Block {
            line: n + 1,
            lang: words.next().unwrap_or("").to_owned(),
            run: false,
            output: false,
            file: None,
            body: String::new(),
        };
        for word in words {
            match word {
                "run" => block.run = true,
                "output" => block.output = true,
                _ => match word.strip_prefix("file=") {
                    Some(path) if !path.is_empty() && !path.contains("..") => {
                        block.file = Some(path.to_owned());
                    }
                    _ => {
                        return Err(format!(
                            "{name}:{}: unknown mark {word:?} after ```{} \
                             (known: run, output, file=PATH; see docs/README.md)",
                            block.line, block.lang
                        ));
                    }
                },
            }
        }
        let mut closed = false;
        for (_, line) in lines.by_ref() {
            if line.trim() == "```" {
                closed = true;
                break;
            }
            let cut = line.len() - line.trim_start().len();
            block.body.push_str(&line[cut.min(indent)..]);
            block.body.push('\n');
        }
        if !closed {
            return Err(format!("{name}:{}: the block is never closed", block.line));
        }
        blocks.push(block);
    }
    Ok(blocks)
}

/// Runs the runnable blocks of one page in order; how many ran.
fn run_page(name: &str, markdown: &str) -> Result<usize, String> {
    let blocks = blocks(name, markdown)?;
    let dir = root().join("target").join("docs").join("work").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    for shared in ["guest-sdk", "wit"] {
        std::os::unix::fs::symlink(root().join(shared), dir.join(shared)).unwrap();
    }
    // `cerebelum` on PATH is the binary under test.
    let tools = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(bin(), tools.path().join("cerebelum")).unwrap();
    let mut ran = 0;
    let mut blocks = blocks.iter().peekable();
    while let Some(block) = blocks.next() {
        let at = format!("{name}:{}", block.line);
        if block.output {
            return Err(format!(
                "{at}: a `text output` block must follow a `run` block"
            ));
        }
        if let Some(file) = &block.file {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &block.body).unwrap();
        }
        if !block.run {
            continue;
        }
        let stdout = run_block(&dir, tools.path(), block, &at)?;
        if let Some(output) = blocks.next_if(|next| next.output) {
            compare(&at, &output.body, &stdout)?;
        }
        ran += 1;
    }
    Ok(ran)
}

/// Runs one block in `dir`; what it printed on stdout.
fn run_block(dir: &Path, tools: &Path, block: &Block, at: &str) -> Result<String, String> {
    let mut command = match block.lang.as_str() {
        "python" => {
            let script = match &block.file {
                Some(file) => file.clone(),
                None => {
                    let script = format!(".block-{}.py", block.line);
                    std::fs::write(dir.join(&script), &block.body).unwrap();
                    script
                }
            };
            let mut c = Command::new(python());
            c.arg(script);
            c
        }
        "sh" | "bash" => {
            let script = format!(".block-{}.sh", block.line);
            std::fs::write(dir.join(&script), &block.body).unwrap();
            let mut c = Command::new("bash");
            c.args(["-euo", "pipefail", &script]);
            c
        }
        other => {
            return Err(format!(
                "{at}: cannot run a ```{other} block (python and sh run; a Rust crate is \
                 written with file= and built by a sh block)"
            ));
        }
    };
    let venv_bin = python().parent().unwrap().to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        [tools.to_path_buf(), venv_bin]
            .into_iter()
            .chain(std::env::split_paths(&path)),
    )
    .unwrap();
    // A reader's shell has none of these: no Cerebelum settings, and not
    // the variables cargo sets for a test (`CARGO` among them, which
    // `cerebelum build` would run instead of the `cargo` on PATH).
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CEREBELUM_") || (name.starts_with("CARGO") && name != "CARGO_HOME") {
            command.env_remove(key);
        }
    }
    command
        .current_dir(dir)
        .env("PATH", path)
        .env("CEREBELUM_CACHE_DIR", cache_dir())
        .env("CARGO_TARGET_DIR", docs_cargo_dir())
        // The suite's own build fetched every crate a page's crate uses.
        .env("CARGO_NET_OFFLINE", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so whatever it leaves running ends with it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("{at}: cannot start it: {e}"))?;
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + BLOCK_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => Err(format!(
            "{at}: the ```{} block failed ({status}); it printed:\n{stdout}\n--- stderr:\n{stderr}",
            block.lang
        )),
        None => Err(format!(
            "{at}: the ```{} block still ran after {BLOCK_TIMEOUT:?}; it printed:\n{stdout}\n\
             --- stderr:\n{stderr}",
            block.lang
        )),
    }
}

/// Where the pages' Rust crates are built, kept between runs.
fn docs_cargo_dir() -> PathBuf {
    root().join("target").join("docs").join("cargo")
}

/// Whether `actual` is what the page's output block says, line by line.
fn compare(at: &str, expected: &str, actual: &str) -> Result<(), String> {
    let lines = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    };
    let (want, got) = (lines(expected), lines(actual));
    if want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| matches(w, g)) {
        return Ok(());
    }
    Err(format!(
        "{at}: the block printed\n{actual}\n--- where the page says (… is any text)\n{expected}"
    ))
}

/// Whether `line` is `pattern`, where each `…` in `pattern` stands for
/// any text.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == line;
    };
    let Some(rest) = line.strip_prefix(first) else {
        return false;
    };
    let Some(mut rest) = rest.strip_suffix(last) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn an_ellipsis_stands_for_any_text() {
    assert!(matches("ex_… completed", "ex_0123 completed"));
    assert!(matches("a … b … c", "a 1 b 2 c"));
    assert!(matches("…", "anything"));
    assert!(matches("same", "same"));
    assert!(!matches("same", "other"));
    assert!(!matches("ex_… completed", "ex_0123 failed"));
    assert!(!matches("a … b … c", "a 1 c 2 b"));
    // The prefix and the suffix do not share characters.
    assert!(!matches("ab…ba", "aba"));
}
