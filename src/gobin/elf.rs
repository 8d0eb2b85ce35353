//! Just enough ELF to inspect a Go binary: the header, the loadable segments (to map a
//! virtual address to a file offset, and to tell a truncated file) and the section table
//! (to find `.go.buildinfo` and `.gopclntab` by name). Pure functions over `&[u8]`; the
//! caller maps the file.
//!
//! 32- and 64-bit, little- and big-endian. Section headers are optional (`sstrip` removes
//! them); program headers are not.

use std::ops::Range;

const MAGIC: &[u8; 4] = b"\x7fELF";
const CLASS_32: u8 = 1;
const CLASS_64: u8 = 2;
const DATA_LSB: u8 = 1;
const DATA_MSB: u8 = 2;
const PT_LOAD: u32 = 1;
const SHT_NOBITS: u32 = 8;
const SHT_SYMTAB: u32 = 2;

/// Why bytes are not a usable ELF file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file (it starts with {found})")]
    BadMagic { found: String },
    #[error("unsupported ELF class {class} (want 1 for 32-bit or 2 for 64-bit)")]
    BadClass { class: u8 },
    #[error("unsupported ELF data encoding {data} (want 1 for little- or 2 for big-endian)")]
    BadEncoding { data: u8 },
    /// The header points past the end of the file: a partial copy or download.
    #[error("{what} ends at byte {end} but the file has only {len} bytes")]
    Truncated { what: String, end: u64, len: u64 },
    #[error("malformed ELF: {what}")]
    Malformed { what: String },
}

/// Byte order and word size, shared by the ELF and Go build info decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub big_endian: bool,
    pub is_64: bool,
}

impl Layout {
    pub fn ptr_size(self) -> usize {
        if self.is_64 {
            8
        } else {
            4
        }
    }

    pub fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let b: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    pub fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let b: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    pub fn u64(self, b: &[u8], at: usize) -> Option<u64> {
        let b: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }

    /// A pointer-sized word (4 or 8 bytes).
    pub fn word(self, b: &[u8], at: usize) -> Option<u64> {
        if self.is_64 {
            self.u64(b, at)
        } else {
            self.u32(b, at).map(u64::from)
        }
    }
}

/// A `PT_LOAD` segment: where its bytes sit in the file and in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
}

/// A section with file contents (`SHT_NOBITS` sections such as `.bss` are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

impl Section {
    pub fn range(&self) -> Range<usize> {
        self.offset as usize..(self.offset + self.size) as usize
    }
}

/// The parts of an ELF file that inspection uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    pub layout: Layout,
    /// `e_machine`.
    pub machine: u16,
    pub segments: Vec<Segment>,
    /// Empty when the section table was stripped.
    pub sections: Vec<Section>,
    /// `.symtab` and its string table; `None` when stripped.
    pub symtab: Option<SymbolTable>,
}

/// Where `.symtab` and its string table sit in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolTable {
    pub syms: Range<usize>,
    pub strs: Range<usize>,
}

impl Elf {
    /// Parse and bounds-check the header, program headers and section headers. Every
    /// segment and section must lie inside `data`, otherwise the file is truncated.
    pub fn parse(data: &[u8]) -> Result<Elf, ElfError> {
        let len = data.len() as u64;
        if data.len() < 4 || &data[..4] != MAGIC {
            return Err(ElfError::BadMagic {
                found: describe_start(data),
            });
        }
        let truncated = |what: &str, end: u64| ElfError::Truncated {
            what: what.to_string(),
            end,
            len,
        };
        if data.len() < 6 {
            return Err(truncated("the ELF identification", 16));
        }
        let is_64 = match data[4] {
            CLASS_32 => false,
            CLASS_64 => true,
            class => return Err(ElfError::BadClass { class }),
        };
        let big_endian = match data[5] {
            DATA_LSB => false,
            DATA_MSB => true,
            data => return Err(ElfError::BadEncoding { data }),
        };
        let l = Layout { big_endian, is_64 };
        let ehsize: u64 = if is_64 { 64 } else { 52 };
        if len < ehsize {
            return Err(truncated("the ELF header", ehsize));
        }
        // Offsets of e_phoff etc. differ between the classes; e_machine does not.
        let malformed = || ElfError::Malformed {
            what: "short header".into(),
        };
        let machine = l.u16(data, 18).ok_or_else(malformed)?;
        let (phoff, shoff, rest) = if is_64 {
            (l.u64(data, 32), l.u64(data, 40), 52)
        } else {
            (
                l.u32(data, 28).map(u64::from),
                l.u32(data, 32).map(u64::from),
                40,
            )
        };
        let (phoff, shoff) = (phoff.ok_or_else(malformed)?, shoff.ok_or_else(malformed)?);
        let phentsize = u64::from(l.u16(data, rest + 2).ok_or_else(malformed)?);
        let phnum = u64::from(l.u16(data, rest + 4).ok_or_else(malformed)?);
        let shentsize = u64::from(l.u16(data, rest + 6).ok_or_else(malformed)?);
        let shnum = u64::from(l.u16(data, rest + 8).ok_or_else(malformed)?);
        let shstrndx = usize::from(l.u16(data, rest + 10).ok_or_else(malformed)?);

        let (min_ph, min_sh) = if is_64 { (56, 64) } else { (32, 40) };
        if phnum == 0 {
            return Err(ElfError::Malformed {
                what: "no program headers (not an executable)".into(),
            });
        }
        if phentsize < min_ph {
            return Err(ElfError::Malformed {
                what: format!("program header size {phentsize} < {min_ph}"),
            });
        }
        let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
        if ph_end > len {
            return Err(truncated("the program header table", ph_end));
        }
        let mut segments = Vec::new();
        for i in 0..phnum {
            let at = (phoff + i * phentsize) as usize;
            let p_type = l.u32(data, at).ok_or_else(malformed)?;
            if p_type != PT_LOAD {
                continue;
            }
            let (offset, vaddr, filesz) = if is_64 {
                (
                    l.u64(data, at + 8),
                    l.u64(data, at + 16),
                    l.u64(data, at + 32),
                )
            } else {
                (
                    l.u32(data, at + 4).map(u64::from),
                    l.u32(data, at + 8).map(u64::from),
                    l.u32(data, at + 16).map(u64::from),
                )
            };
            let seg = Segment {
                offset: offset.ok_or_else(malformed)?,
                vaddr: vaddr.ok_or_else(malformed)?,
                filesz: filesz.ok_or_else(malformed)?,
            };
            let end = seg.offset.saturating_add(seg.filesz);
            if end > len {
                return Err(truncated(&format!("loadable segment {i}"), end));
            }
            segments.push(seg);
        }

        let mut sections = Vec::new();
        let mut symtab = None;
        if shoff != 0 && shnum != 0 {
            if shentsize < min_sh {
                return Err(ElfError::Malformed {
                    what: format!("section header size {shentsize} < {min_sh}"),
                });
            }
            let sh_end = shoff.saturating_add(shentsize.saturating_mul(shnum));
            if sh_end > len {
                return Err(truncated("the section header table", sh_end));
            }
            let mut raw = Vec::new();
            for i in 0..shnum {
                let at = (shoff + i * shentsize) as usize;
                let name = l.u32(data, at).ok_or_else(malformed)?;
                let sh_type = l.u32(data, at + 4).ok_or_else(malformed)?;
                let (addr, offset, size) = if is_64 {
                    (
                        l.u64(data, at + 16),
                        l.u64(data, at + 24),
                        l.u64(data, at + 32),
                    )
                } else {
                    (
                        l.u32(data, at + 12).map(u64::from),
                        l.u32(data, at + 16).map(u64::from),
                        l.u32(data, at + 20).map(u64::from),
                    )
                };
                let (addr, offset, size) = (
                    addr.ok_or_else(malformed)?,
                    offset.ok_or_else(malformed)?,
                    size.ok_or_else(malformed)?,
                );
                let link = l
                    .u32(data, at + if is_64 { 40 } else { 24 })
                    .ok_or_else(malformed)?;
                let end = offset.saturating_add(size);
                if sh_type != SHT_NOBITS && end > len {
                    return Err(truncated(&format!("section {i}"), end));
                }
                raw.push((name, sh_type, addr, offset, size, link));
            }
            symtab = raw.iter().find(|s| s.1 == SHT_SYMTAB).and_then(|s| {
                let strs = raw.get(s.5 as usize).filter(|t| t.1 != SHT_NOBITS)?;
                Some(SymbolTable {
                    syms: s.3 as usize..(s.3 + s.4) as usize,
                    strs: strs.3 as usize..(strs.3 + strs.4) as usize,
                })
            });
            let strtab = raw
                .get(shstrndx)
                .filter(|s| s.1 != SHT_NOBITS)
                .map(|s| &data[s.3 as usize..(s.3 + s.4) as usize]);
            for (name, sh_type, addr, offset, size, _) in raw {
                if sh_type == SHT_NOBITS || size == 0 {
                    continue;
                }
                let name = strtab
                    .and_then(|t| c_string(t, name as usize))
                    .unwrap_or_default();
                sections.push(Section {
                    name,
                    addr,
                    offset,
                    size,
                });
            }
        }
        Ok(Elf {
            layout: l,
            machine,
            segments,
            sections,
            symtab,
        })
    }

    /// The value (address) of the symbol `name` in `.symtab`, when the binary has one
    /// (not stripped).
    pub fn symbol(&self, data: &[u8], name: &str) -> Option<u64> {
        let tab = self.symtab.as_ref()?;
        let syms = data.get(tab.syms.clone())?;
        let strs = data.get(tab.strs.clone())?;
        let l = self.layout;
        let (entsize, value_at) = if l.is_64 { (24, 8) } else { (16, 4) };
        syms.chunks_exact(entsize).find_map(|sym| {
            let name_at = l.u32(sym, 0)? as usize;
            let sym_name = strs.get(name_at..)?;
            let matches =
                sym_name.starts_with(name.as_bytes()) && sym_name.get(name.len()) == Some(&0);
            matches.then(|| l.word(sym, value_at)).flatten()
        })
    }

    /// The first section with this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The section whose file bytes hold `offset`, for naming where evidence sits.
    pub fn section_at(&self, offset: u64) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.offset <= offset && offset < s.offset + s.size)
    }

    /// The file offset of a virtual address inside a loadable segment's file bytes.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let delta = vaddr.checked_sub(s.vaddr)?;
            (delta < s.filesz).then_some(s.offset + delta)
        })
    }

    /// `len` bytes at virtual address `vaddr`, when they are all in one segment's file bytes.
    pub fn read_vaddr<'a>(&self, data: &'a [u8], vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let seg = self.segments.iter().find(|s| {
            vaddr >= s.vaddr && vaddr.saturating_add(len) <= s.vaddr.saturating_add(s.filesz)
        })?;
        let start = usize::try_from(seg.offset + (vaddr - seg.vaddr)).ok()?;
        data.get(start..start.checked_add(usize::try_from(len).ok()?)?)
    }

    /// Go's name for the architecture (`GOARCH`), or `machine <n>` for others.
    pub fn arch(&self) -> String {
        arch_name(self.machine, self.layout)
    }
}

/// Go's `GOARCH` for an ELF machine number.
pub fn arch_name(machine: u16, layout: Layout) -> String {
    let name = match (machine, layout.is_64, layout.big_endian) {
        (62, ..) => "amd64",
        (183, ..) => "arm64",
        (3, ..) => "386",
        (40, ..) => "arm",
        (21, true, false) => "ppc64le",
        (21, true, true) => "ppc64",
        (22, ..) => "s390x",
        (243, true, _) => "riscv64",
        (8, false, true) => "mips",
        (8, false, false) => "mipsle",
        (8, true, true) => "mips64",
        (8, true, false) => "mips64le",
        (258, ..) => "loong64",
        _ => return format!("machine {machine}"),
    };
    name.to_string()
}

/// A NUL-terminated string at `at` in a string table.
fn c_string(table: &[u8], at: usize) -> Option<String> {
    let rest = table.get(at..)?;
    let end = memchr::memchr(0, rest)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// How a file that is not ELF starts, for the error: a script shebang, text, or hex bytes.
fn describe_start(data: &[u8]) -> String {
    if data.is_empty() {
        return "nothing: the file is empty".into();
    }
    let head = &data[..data.len().min(4)];
    if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("'{}'", String::from_utf8_lossy(head))
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF: header, one PT_LOAD covering the file, and a
    /// section table with `.shstrtab` and one named section.
    pub(crate) fn tiny_elf64(machine: u16, section: &str, contents: &[u8]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let shstr_name = strtab.len() as u32;
        strtab.extend_from_slice(b".shstrtab\0");
        let sec_name = strtab.len() as u32;
        strtab.extend_from_slice(section.as_bytes());
        strtab.push(0);

        let phoff = 64u64;
        let data_off = phoff + 56;
        let strtab_off = data_off + contents.len() as u64;
        let shoff = strtab_off + strtab.len() as u64;
        let total = shoff + 3 * 64;

        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(MAGIC);
        b[4] = CLASS_64;
        b[5] = DATA_LSB;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[32..40].copy_from_slice(&phoff.to_le_bytes());
        b[40..48].copy_from_slice(&shoff.to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[58..60].copy_from_slice(&64u16.to_le_bytes());
        b[60..62].copy_from_slice(&3u16.to_le_bytes());
        b[62..64].copy_from_slice(&1u16.to_le_bytes());
        // PT_LOAD: whole file at vaddr 0x400000
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[16..24].copy_from_slice(&0x40_0000u64.to_le_bytes());
        ph[32..40].copy_from_slice(&total.to_le_bytes());
        b.extend_from_slice(&ph);
        b.extend_from_slice(contents);
        b.extend_from_slice(&strtab);
        let sh = |name: u32, ty: u32, addr: u64, off: u64, size: u64| {
            let mut s = vec![0u8; 64];
            s[..4].copy_from_slice(&name.to_le_bytes());
            s[4..8].copy_from_slice(&ty.to_le_bytes());
            s[16..24].copy_from_slice(&addr.to_le_bytes());
            s[24..32].copy_from_slice(&off.to_le_bytes());
            s[32..40].copy_from_slice(&size.to_le_bytes());
            s
        };
        b.extend(sh(0, 0, 0, 0, 0));
        b.extend(sh(shstr_name, 3, 0, strtab_off, strtab.len() as u64));
        b.extend(sh(
            sec_name,
            1,
            0x40_0000 + data_off,
            data_off,
            contents.len() as u64,
        ));
        assert_eq!(b.len() as u64, total);
        b
    }

    #[test]
    fn parses_sections_segments_and_addresses() {
        let elf_bytes = tiny_elf64(183, ".go.buildinfo", b"0123456789abcdef");
        let elf = Elf::parse(&elf_bytes).unwrap();
        assert_eq!(elf.arch(), "arm64");
        let sec = elf.section(".go.buildinfo").unwrap();
        assert_eq!(&elf_bytes[sec.range()], b"0123456789abcdef");
        assert_eq!(elf.file_offset(sec.addr), Some(sec.offset));
        assert_eq!(
            elf.read_vaddr(&elf_bytes, sec.addr + 4, 3),
            Some(&b"456"[..])
        );
        assert_eq!(elf.read_vaddr(&elf_bytes, 0x10, 3), None);
        assert_eq!(
            elf.section_at(sec.offset + 2).map(|s| s.name.as_str()),
            Some(".go.buildinfo")
        );
    }

    #[test]
    fn rejects_what_is_not_a_whole_elf_file() {
        let good = tiny_elf64(62, ".text", b"x");
        let mut bad_class = good.clone();
        bad_class[4] = 3;
        let mut bad_data = good.clone();
        bad_data[5] = 0;
        let mut no_phdrs = good.clone();
        no_phdrs[56] = 0;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "empty",
                vec![],
                "not an ELF file (it starts with nothing: the file is empty)",
            ),
            (
                "script",
                b"#!/bin/sh\n".to_vec(),
                "not an ELF file (it starts with '#!/b')",
            ),
            (
                "binary junk",
                vec![0xca, 0xfe, 0xba, 0xbe, 0],
                "not an ELF file (it starts with bytes ca fe ba be)",
            ),
            (
                "magic only",
                MAGIC.to_vec(),
                "the ELF identification ends at byte 16 but the file has only 4 bytes",
            ),
            (
                "short header",
                good[..40].to_vec(),
                "the ELF header ends at byte 64 but the file has only 40 bytes",
            ),
            (
                "cut in the program headers",
                good[..100].to_vec(),
                "the program header table ends at byte 120 but the file has only 100 bytes",
            ),
            (
                "cut in the segment",
                good[..130].to_vec(),
                "loadable segment 0 ends at byte 330 but the file has only 130 bytes",
            ),
            (
                "bad class",
                bad_class,
                "unsupported ELF class 3 (want 1 for 32-bit or 2 for 64-bit)",
            ),
            (
                "bad encoding",
                bad_data,
                "unsupported ELF data encoding 0 (want 1 for little- or 2 for big-endian)",
            ),
            (
                "no program headers",
                no_phdrs,
                "malformed ELF: no program headers (not an executable)",
            ),
        ];
        for (name, bytes, want) in cases {
            let got = Elf::parse(&bytes).map(|_| ()).unwrap_err().to_string();
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn arch_names_follow_goarch() {
        let le64 = Layout {
            big_endian: false,
            is_64: true,
        };
        let cases = [
            (62, "amd64"),
            (183, "arm64"),
            (21, "ppc64le"),
            (9999, "machine 9999"),
        ];
        for (machine, want) in cases {
            assert_eq!(arch_name(machine, le64), want, "machine {machine}");
        }
    }
}
