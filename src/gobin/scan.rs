//! Byte scans over a whole mapped binary: the kmem markers, and Go's pclntab when the
//! build info is missing. One `memmem` pass for `kmem` finds every marker; each hit is
//! then checked against the bytes around it.

use std::io::{self, Read};

use memchr::memmem;

use super::elf::{Elf, Layout};

/// A byte string whose presence tells which kmem code a binary links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Marker {
    /// The cgroup file runc's `kmem.go` writes to switch kmem accounting on.
    KmemLimitFile,
    /// The pclntab file name of runc's kmem-enabling code (build tag `!nokmem`).
    KmemGo,
    /// The pclntab file name of its no-op twin (build tag `nokmem`).
    KmemDisabledGo,
}

/// The part every marker shares: one search finds them all.
const ANCHOR: &[u8] = b"kmem";
/// How far back a file name is followed to show it whole.
const MAX_FILE_NAME: usize = 512;

impl Marker {
    pub const ALL: [Marker; 3] = [
        Marker::KmemLimitFile,
        Marker::KmemGo,
        Marker::KmemDisabledGo,
    ];

    /// The bytes searched for.
    pub fn needle(self) -> &'static str {
        match self {
            Marker::KmemLimitFile => "memory.kmem.limit_in_bytes",
            Marker::KmemGo => "libcontainer/cgroups/fs/kmem.go",
            Marker::KmemDisabledGo => "libcontainer/cgroups/fs/kmem_disabled.go",
        }
    }

    /// True for markers of code that switches kmem accounting on.
    pub fn enables_kmem(self) -> bool {
        !matches!(self, Marker::KmemDisabledGo)
    }

    fn is_file_name(self) -> bool {
        !matches!(self, Marker::KmemLimitFile)
    }

    /// The needle split around the anchor: (before, after).
    fn split(self) -> (&'static [u8], &'static [u8]) {
        let n = self.needle().as_bytes();
        let at = memmem::find(n, ANCHOR).unwrap_or(0);
        (&n[..at], &n[at + ANCHOR.len()..])
    }
}

/// Where a marker was found first, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub marker: Marker,
    /// File offset of the first occurrence.
    pub offset: u64,
    pub occurrences: usize,
    /// For file names: the whole NUL-terminated name around the first occurrence, e.g.
    /// `k8s.io/kubernetes/vendor/github.com/opencontainers/runc/libcontainer/cgroups/fs/kmem.go`.
    pub file_name: Option<String>,
}

/// Every marker in `data`, in the order of [`Marker::ALL`].
pub fn markers(data: &[u8]) -> Vec<Hit> {
    let mut scanner = MarkerScanner::default();
    scanner.feed(data, true);
    scanner.finish()
}

/// Every marker in what `reader` yields, read `chunk` bytes at a time: memory use stays
/// at about one chunk whatever the file size.
pub fn markers_streamed(mut reader: impl Read, chunk: usize) -> io::Result<Vec<Hit>> {
    let mut scanner = MarkerScanner::default();
    let mut buf = vec![0u8; chunk.max(1)];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        scanner.feed(&buf[..n], false);
    }
    scanner.feed(&[], true);
    Ok(scanner.finish())
}

/// Bytes kept before the next unexamined position: the longest needle part before the
/// anchor plus a whole file name.
const KEEP_BEFORE: usize = MAX_FILE_NAME + 64;
/// Bytes needed after an anchor to decide on it: the longest part after it plus a NUL.
const NEED_AFTER: usize = 64;

/// Scans a stream that arrives in pieces. `window` holds the tail of what came before
/// (for context) and what is not examined yet; `window[0]` is at file offset `base`.
#[derive(Debug, Default)]
struct MarkerScanner {
    window: Vec<u8>,
    base: usize,
    /// Anchor positions in `window` before this one were examined.
    examined: usize,
    hits: Vec<Hit>,
}

impl MarkerScanner {
    fn feed(&mut self, bytes: &[u8], last: bool) {
        self.window.extend_from_slice(bytes);
        // An anchor needs NEED_AFTER bytes after it unless the stream has ended.
        let limit = if last {
            self.window.len()
        } else {
            self.window.len().saturating_sub(NEED_AFTER)
        };
        if limit > self.examined {
            let from = self.examined;
            let to = (limit + ANCHOR.len() - 1).min(self.window.len());
            let starts: Vec<usize> = memmem::find_iter(&self.window[from..to], ANCHOR)
                .map(|at| from + at)
                .filter(|&at| at < limit)
                .collect();
            for at in starts {
                self.check(at);
            }
            self.examined = limit;
        }
        // Drop what no later anchor can need.
        let drop = self.examined.saturating_sub(KEEP_BEFORE);
        if drop > 0 {
            self.window.drain(..drop);
            self.base += drop;
            self.examined -= drop;
        }
    }

    /// Check the anchor at `at` (an index in `window`) against every marker.
    fn check(&mut self, at: usize) {
        let data = &self.window;
        for marker in Marker::ALL {
            let (before, after) = marker.split();
            let Some(start) = at.checked_sub(before.len()) else {
                continue;
            };
            let end = at + ANCHOR.len();
            if &data[start..at] != before || !data[end..].starts_with(after) {
                continue;
            }
            match self.hits.iter_mut().find(|h| h.marker == marker) {
                Some(hit) => hit.occurrences += 1,
                None => {
                    let file_name = marker
                        .is_file_name()
                        .then(|| whole_c_string(data, start, end + after.len(), self.base == 0))
                        .flatten();
                    self.hits.push(Hit {
                        marker,
                        offset: (self.base + start) as u64,
                        occurrences: 1,
                        file_name,
                    });
                }
            }
        }
    }

    fn finish(mut self) -> Vec<Hit> {
        self.hits.sort_by_key(|h| h.marker);
        self.hits
    }
}

/// The printable string around `start..end` when it is NUL-terminated (as pclntab file
/// names are) and starts after a NUL or non-printable byte.
/// `at_file_start`: `data[0]` is the first byte of the file (not a cut-off window).
fn whole_c_string(data: &[u8], start: usize, end: usize, at_file_start: bool) -> Option<String> {
    if data.get(end) != Some(&0) {
        return None;
    }
    let floor = start.saturating_sub(MAX_FILE_NAME);
    let mut from = start;
    while from > floor && is_name_byte(data[from - 1]) {
        from -= 1;
    }
    let whole = if from == 0 {
        at_file_start
    } else {
        !is_name_byte(data[from - 1])
    };
    if !whole {
        return None;
    }
    std::str::from_utf8(&data[from..end]).ok().map(String::from)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() || b == b' '
}

/// The pclntab header magics, newest first, with the Go releases that write them.
const PCLNTAB_MAGICS: [(u32, &str); 4] = [
    (0xffff_fff1, "go1.20 or later"),
    (0xffff_fff0, "go1.18 or go1.19"),
    (0xffff_fffa, "go1.16 or go1.17"),
    (0xffff_fffb, "go1.2 to go1.15"),
];
/// A function every Go program links; its name is in the pclntab even when stripped.
const GO_RUNTIME_MARKER: &[u8] = b"runtime.goexit";

/// Go's pclntab: where it starts and which Go releases write its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pclntab {
    pub offset: u64,
    pub go_releases: &'static str,
}

/// Find the pclntab: the `.gopclntab` section, else (section table stripped) a header
/// magic with a plausible instruction size and pointer size, in a file that also holds
/// the name `runtime.goexit`.
pub fn pclntab(elf: &Elf) -> Option<Pclntab> {
    let data = elf.data();
    if let Some(sec) = elf.sections().find(|s| s.name.ends_with(".gopclntab")) {
        let at = sec.offset as usize;
        return Some(Pclntab {
            offset: sec.offset,
            go_releases: header_release(data, at, elf.layout).unwrap_or("an unknown Go release"),
        });
    }
    memmem::find(data, GO_RUNTIME_MARKER)?;
    PCLNTAB_MAGICS.iter().find_map(|&(magic, _)| {
        let bytes = if elf.layout.big_endian {
            magic.to_be_bytes()
        } else {
            magic.to_le_bytes()
        };
        let needle = [bytes[0], bytes[1], bytes[2], bytes[3], 0, 0];
        memmem::find_iter(data, &needle).find_map(|at| {
            header_release(data, at, elf.layout).map(|go_releases| Pclntab {
                offset: at as u64,
                go_releases,
            })
        })
    })
}

/// The Go releases whose pclntab header is at `at`, when it looks like one: magic, two
/// zero bytes, instruction size quantum 1, 2 or 4, pointer size 4 or 8.
fn header_release(data: &[u8], at: usize, layout: Layout) -> Option<&'static str> {
    let magic = layout.u32(data, at)?;
    let head = data.get(at + 4..at + 8)?;
    let plausible =
        head[0] == 0 && head[1] == 0 && matches!(head[2], 1 | 2 | 4) && matches!(head[3], 4 | 8);
    if !plausible {
        return None;
    }
    PCLNTAB_MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(data: &[u8], s: &str) -> u64 {
        memmem::find(data, s.as_bytes()).unwrap() as u64
    }

    #[test]
    fn finds_each_marker_once_with_its_first_offset() {
        let data = b"\x00\x00k8s.io/vendor/runc/libcontainer/cgroups/fs/kmem.go\x00\
            xx memory.kmem.limit_in_bytesmemory.kmem.usage_in_bytes memory.kmem.limit_in_bytes \
            \x00/src/libcontainer/cgroups/fs/kmem_disabled.go\x00kmem";
        let hits = markers(data);
        let got: Vec<(Marker, u64, usize, Option<&str>)> = hits
            .iter()
            .map(|h| (h.marker, h.offset, h.occurrences, h.file_name.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Marker::KmemLimitFile,
                    at(data, "memory.kmem.limit"),
                    2,
                    None
                ),
                (
                    Marker::KmemGo,
                    at(data, "libcontainer/cgroups/fs/kmem.go"),
                    1,
                    Some("k8s.io/vendor/runc/libcontainer/cgroups/fs/kmem.go")
                ),
                (
                    Marker::KmemDisabledGo,
                    at(data, "libcontainer/cgroups/fs/kmem_d"),
                    1,
                    Some("/src/libcontainer/cgroups/fs/kmem_disabled.go")
                ),
            ]
        );
    }

    #[test]
    fn near_misses_are_not_markers() {
        let cases: [&[u8]; 6] = [
            b"memory.kmem.usage_in_bytes",
            b"memory.kmem.limit_in_byte",
            b"emory.kmem.limit_in_bytes",
            b"libcontainer/cgroups/fs/kmem.g",
            b"libcontainer/cgroups/systemd/kmem.go",
            b"kmem",
        ];
        for data in cases {
            assert_eq!(markers(data), vec![], "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn file_names_are_shown_only_when_whole() {
        let cases: [(&[u8], Option<&str>); 3] = [
            (
                b"\x00a/libcontainer/cgroups/fs/kmem.go\x00",
                Some("a/libcontainer/cgroups/fs/kmem.go"),
            ),
            (
                b"libcontainer/cgroups/fs/kmem.go\x00",
                Some("libcontainer/cgroups/fs/kmem.go"),
            ),
            (b"\x00a/libcontainer/cgroups/fs/kmem.go:12", None),
        ];
        for (data, want) in cases {
            let hits = markers(data);
            assert_eq!(hits.len(), 1, "{}", String::from_utf8_lossy(data));
            assert_eq!(
                hits[0].file_name.as_deref(),
                want,
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn streaming_in_small_chunks_finds_the_same() {
        let mut data = vec![b'x'; 3000];
        data.extend_from_slice(
            b"\x00vendor/github.com/opencontainers/runc/libcontainer/cgroups/fs/kmem.go\x00",
        );
        data.extend(vec![b'y'; 1500]);
        data.extend_from_slice(b"memory.kmem.limit_in_bytes");
        data.extend(vec![b'z'; 700]);
        data.extend_from_slice(b"\x00libcontainer/cgroups/fs/kmem_disabled.go\x00");
        data.extend_from_slice(b"memory.kmem.limit_in_bytes");
        let whole = markers(&data);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].occurrences, 2);
        for chunk in [1, 3, 7, 64, 100, 577, 4096, 1 << 20] {
            let streamed = markers_streamed(&data[..], chunk).unwrap();
            assert_eq!(streamed, whole, "chunk size {chunk}");
        }
    }

    #[test]
    fn pclntab_header_needs_a_plausible_shape() {
        let le = Layout {
            big_endian: false,
            is_64: true,
        };
        let cases: [(&[u8], Option<&str>); 5] = [
            (b"\xf1\xff\xff\xff\x00\x00\x01\x08", Some("go1.20 or later")),
            (b"\xfb\xff\xff\xff\x00\x00\x04\x04", Some("go1.2 to go1.15")),
            (b"\xf1\xff\xff\xff\x00\x00\x03\x08", None),
            (b"\xf1\xff\xff\xff\x00\x01\x01\x08", None),
            (b"\xf2\xff\xff\xff\x00\x00\x01\x08", None),
        ];
        for (data, want) in cases {
            assert_eq!(header_release(data, 0, le), want, "{data:x?}");
        }
    }
}
