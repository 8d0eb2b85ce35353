//! What a node operator reads and types: the man page (every subcommand and flag the parser
//! accepts, the sections an operator looks for, no groff warnings), the bash completion the
//! package ships (generated from the same parser), and the README shipped in
//! /usr/share/doc/k8s-nokmem, which is about the node, not the build.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use common::{ok, repo};

const MAN_PAGE: &str = "debian/k8s-nokmem.8";
const NODE_README: &str = "debian/README.node";

fn man_page() -> String {
    fs::read_to_string(repo().join(MAN_PAGE)).unwrap()
}

/// The man page source with roff's escaped minus (`\-`) and font changes removed, so that
/// `\fB\-\-json\fR` reads `--json`.
fn plain(roff: &str) -> String {
    roff.replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
}

/// `.SH NAME` -> the section's text (plain), in order.
fn sections(roff: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in roff.lines() {
        if let Some(name) = line.strip_prefix(".SH ") {
            out.push((name.trim_matches('"').to_string(), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(&plain(line));
            text.push('\n');
        }
    }
    out
}

fn section<'a>(secs: &'a [(String, String)], name: &str) -> &'a str {
    secs.iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("{MAN_PAGE} has no .SH {name} section"))
}

/// The entries of the COMMANDS section: first word of each `.TP` heading -> the entry.
fn command_entries(commands: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut heading_next = false;
    for line in commands.lines() {
        if line == ".TP" {
            heading_next = true;
            continue;
        }
        if heading_next {
            heading_next = false;
            let name = line
                .trim_start_matches(".B ")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            out.push((name, format!("{line}\n")));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// How an argument shows up in the man page: `--long` (and `-s`), or its value name when
/// positional.
fn spellings(arg: &clap::Arg) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(long) = arg.get_long() {
        out.push(format!("--{long}"));
    }
    if let Some(short) = arg.get_short() {
        out.push(format!("-{short}"));
    }
    if out.is_empty() {
        let name = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
        out.push(name);
    }
    out
}

/// `text` mentions `word` as a word of its own (`--json` is not in `--json-x`).
fn mentions(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[test]
fn man_page_documents_every_subcommand_and_flag() {
    let roff = man_page();
    let secs = sections(&roff);
    let mut cli = k8s_nokmem::cli::Args::command();
    cli.build();
    let mut missing = Vec::new();

    // Global flags (ours, and clap's --help/--version) in OPTIONS.
    let options = section(&secs, "OPTIONS");
    for arg in cli.get_arguments().filter(|a| !a.is_hide_set()) {
        for s in spellings(arg) {
            if !mentions(options, &s) {
                missing.push(format!("OPTIONS: {s} ({})", arg.get_id()));
            }
        }
    }

    // Every visible subcommand has an entry in COMMANDS naming each of its own flags.
    let raw_commands = roff
        .split("\n.SH ")
        .find(|s| s.starts_with("COMMANDS"))
        .expect("a .SH COMMANDS section");
    let entries = command_entries(raw_commands);
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let Some((_, entry)) = entries.iter().find(|(n, _)| n == name) else {
            missing.push(format!("COMMANDS: no `.TP` entry for `{name}`"));
            continue;
        };
        let entry = plain(entry);
        for arg in sub.get_arguments() {
            // -h/-V of every subcommand are the global ones, in OPTIONS
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || arg.is_global_set() || id == "help" || id == "version" {
                continue;
            }
            for s in spellings(arg) {
                if !mentions(&entry, &s) {
                    missing.push(format!("COMMANDS {name}: {s}"));
                }
            }
        }
    }
    // And nothing documented that the parser no longer has.
    for (name, _) in &entries {
        if cli.find_subcommand(name).is_none() {
            missing.push(format!("COMMANDS: `{name}` is not a subcommand"));
        }
    }
    assert!(
        missing.is_empty(),
        "{MAN_PAGE} is out of step with the parser (src/cli); document:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn man_page_has_what_an_operator_looks_up() {
    let secs = sections(&man_page());
    let examples = section(&secs, "EXAMPLES");
    for cmd in [
        "k8s-nokmem status",
        "k8s-nokmem verify",
        "journalctl -u k8s-nokmem-verify",
        "/etc/k8s-nokmem/conf.d/",
        "apt-get remove k8s-nokmem",
    ] {
        assert!(
            examples.contains(cmd),
            "EXAMPLES lacks `{cmd}`:\n{examples}"
        );
    }

    let files = section(&secs, "FILES");
    for path in [
        "/etc/k8s-nokmem/k8s-nokmem.conf",
        "/etc/k8s-nokmem/conf.d/*.conf",
        "/usr/lib/k8s-nokmem/MANIFEST",
        "/var/lib/k8s-nokmem/state.json",
        "/var/lib/k8s-nokmem/journal.json",
        "/var/lib/k8s-nokmem/lock",
        "/run/k8s-nokmem/verify.json",
        "/run/reboot-required",
        "/run/reboot-required.pkgs",
        "/lib/systemd/system/k8s-nokmem-verify.service",
        "/lib/systemd/system/k8s-nokmem-verify.timer",
        "/lib/systemd/system/k8s-nokmem-recover.service",
        "/etc/default/grub.d/99-k8s-nokmem.cfg",
        "/usr/share/doc/k8s-nokmem/README",
        "k8s_nokmem.prom",
        "/usr/bin/kubelet.distrib",
    ] {
        assert!(mentions(files, path), "FILES lacks {path}:\n{files}");
    }
    // Every unit the package ships is listed.
    for unit in fs::read_dir(repo().join("systemd")).unwrap() {
        let name = unit.unwrap().file_name().to_string_lossy().into_owned();
        assert!(files.contains(&name), "FILES lacks the unit {name}");
    }

    let exit = section(&secs, "EXIT STATUS");
    for want in ["status", "verify", "inspect", "install", "0", "1", "2"] {
        assert!(mentions(exit, want), "EXIT STATUS lacks `{want}`:\n{exit}");
    }

    let see_also = section(&secs, "SEE ALSO");
    for page in [
        "kured (8)",
        "unattended-upgrade (8)",
        "prometheus-node-exporter (1)",
        "dpkg-divert (1)",
        "apt-get (8)",
        "journalctl (1)",
    ] {
        let (name, sec) = page.split_once(' ').unwrap();
        let roff_form = format!(".BR {name} {sec}");
        assert!(
            plain(&man_page()).contains(&roff_form),
            "SEE ALSO lacks `{roff_form}`:\n{see_also}"
        );
    }
}

/// lintian runs `man --warnings` on the page; catch what it would see without a .deb.
#[test]
fn man_page_renders_without_groff_warnings() {
    let page = repo().join(MAN_PAGE);
    let out = Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
        .arg(&page)
        .env("MANROFFSEQ", "")
        .env("MANWIDTH", "80")
        .output()
        .expect("man (apt-get install man-db groff-base)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "man --warnings on {}: {stderr}",
        page.display()
    );
}

/// Source the completion script the package ships in a real bash and complete as a user
/// would at a prompt.
fn complete(script: &Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let words_arr: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let prog = format!(
        "source '{}' || exit 3\n\
         complete -p k8s-nokmem >/dev/null || exit 4\n\
         f=$(complete -p k8s-nokmem | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p')\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={}\n\
         COMP_LINE='{line}'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         \"$f\" k8s-nokmem '{}' '{}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words_arr.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len().saturating_sub(2)],
    );
    ok(Command::new("bash").arg("-c").arg(prog))
        .lines()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("k8s-nokmem");
    let out = ok(Command::new(env!("CARGO_BIN_EXE_k8s-nokmem")).args(["completions", "bash"]));
    fs::write(&script, out).unwrap();

    let subs = complete(&script, &["k8s-nokmem", ""]);
    for want in [
        "install", "remove", "recover", "status", "verify", "inspect",
    ] {
        assert!(subs.iter().any(|s| s == want), "{want} not in {subs:?}");
    }
    assert!(
        !subs.iter().any(|s| s == "completions"),
        "the hidden subcommand is offered: {subs:?}"
    );
    assert_eq!(complete(&script, &["k8s-nokmem", "ver"]), ["verify"]);
    assert_eq!(
        complete(&script, &["k8s-nokmem", "verify", "--text"]),
        ["--textfile"]
    );
    let status = complete(&script, &["k8s-nokmem", "status", "--"]);
    assert!(status.iter().any(|s| s == "--json"), "{status:?}");
    assert!(status.iter().any(|s| s == "--root"), "{status:?}");
}

/// `[package.metadata.deb] assets`: (source, destination) pairs, read from Cargo.toml as
/// cargo-deb reads them (one `["src", "dest", "mode"]` per line).
fn deb_assets() -> Vec<(String, String)> {
    let toml = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let start = toml.find("[package.metadata.deb]").unwrap();
    let end = toml[start..]
        .find("\n[package.metadata.deb.variants")
        .map_or(toml.len(), |e| start + e);
    toml[start..end]
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("[\"")?;
            let mut parts = l.split("\", \"");
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

#[test]
fn package_ships_the_node_readme_and_the_bash_completion() {
    let assets = deb_assets();
    let dest = |d: &str| assets.iter().find(|(_, dest)| dest == d).map(|(s, _)| s);
    assert_eq!(
        dest("usr/share/doc/k8s-nokmem/README").map(String::as_str),
        Some(NODE_README),
        "the README in /usr/share/doc is the node operator's: {assets:?}"
    );
    assert!(
        !assets.iter().any(|(s, _)| s == "README.md"),
        "the developers' README.md is not for the node: {assets:?}"
    );
    let completion = dest("usr/share/bash-completion/completions/k8s-nokmem")
        .unwrap_or_else(|| panic!("no bash completion among the assets: {assets:?}"));
    // scripts/build-deb.sh generates it from the helper's parser before cargo deb.
    let build = fs::read_to_string(repo().join("scripts/build-deb.sh")).unwrap();
    assert!(
        build.contains("completions bash") && build.contains(completion.as_str()),
        "scripts/build-deb.sh does not generate {completion}"
    );

    let readme = fs::read_to_string(repo().join(NODE_README)).unwrap();
    for want in [
        "k8s-nokmem status",
        "k8s-nokmem verify",
        "/var/lib/k8s-nokmem/state.json",
        "dpkg-divert --list",
        "/usr/bin/kubelet.distrib",
        "apt-get remove k8s-nokmem",
        "/etc/k8s-nokmem/conf.d/",
        "/run/reboot-required",
        "apt full-upgrade",
        "Breaks",
    ] {
        assert!(readme.contains(want), "{NODE_README} lacks `{want}`");
    }
    for build_only in ["scripts/build-deb.sh", "scripts/test.sh", "cargo "] {
        assert!(
            !readme.contains(build_only),
            "{NODE_README} is for the node, not the build: it mentions `{build_only}`"
        );
    }
}
