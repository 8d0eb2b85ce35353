//! The ELF side of inspection, read with the `object` crate: the segments (to map a virtual
//! address to file bytes), the sections (to find `.go.buildinfo` and `.gopclntab` by name,
//! and to name where evidence sits) and `.symtab` (for `runtime.buildVersion`).
//!
//! `object` reads the tables; this module adds what a user needs when the file is not a
//! whole ELF executable: which table or segment runs past the end of the file (a partial
//! copy), or how a file that is not ELF starts. 32- and 64-bit, little- and big-endian.
//! Section headers are optional (`sstrip` removes them); program headers are not. Works
//! over a mapped file: only the pages of the tables and of the bytes asked for are read.

use object::elf::{self as abi, FileHeader32, FileHeader64, Ident};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, Object, ObjectSection, ObjectSegment, ObjectSymbol};

/// Indexes in the identification bytes ([`Ident`]'s `class` and `data`).
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;

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

impl ElfError {
    /// What `object` could not read, worded as our other errors are.
    fn object(err: object::read::Error) -> ElfError {
        let what = err.to_string();
        let mut chars = what.chars();
        let what = match chars.next() {
            Some(first) => first.to_lowercase().chain(chars).collect(),
            None => what,
        };
        ElfError::Malformed { what }
    }
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

/// A section with file contents (`SHT_NOBITS` sections such as `.bss` are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

impl Section {
    /// Its bytes in the file.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset as usize..(self.offset + self.size) as usize
    }

    fn of<'data>(s: &impl ObjectSection<'data>) -> Option<Section> {
        let (offset, size) = s.file_range().filter(|&(_, size)| size > 0)?;
        Some(Section {
            name: String::from_utf8_lossy(s.name_bytes().unwrap_or_default()).into_owned(),
            addr: s.address(),
            offset,
            size,
        })
    }
}

/// A whole ELF file, its tables checked against its length.
#[derive(Debug)]
pub struct Elf<'data> {
    data: &'data [u8],
    file: object::File<'data>,
    pub layout: Layout,
    /// `e_machine`.
    pub machine: u16,
}

impl<'data> Elf<'data> {
    /// Parse `data`, the whole file. Every table, loadable segment and section must lie
    /// inside it, otherwise the file is truncated.
    pub fn parse(data: &'data [u8]) -> Result<Elf<'data>, ElfError> {
        let len = data.len() as u64;
        if !data.starts_with(&abi::ELFMAG) {
            return Err(ElfError::BadMagic {
                found: describe_start(data),
            });
        }
        let ident_len = std::mem::size_of::<Ident>();
        if data.len() < ident_len {
            return Err(truncated("the ELF identification", ident_len as u64, len));
        }
        let is_64 = match data[EI_CLASS] {
            abi::ELFCLASS32 => false,
            abi::ELFCLASS64 => true,
            class => return Err(ElfError::BadClass { class }),
        };
        let big_endian = match data[EI_DATA] {
            abi::ELFDATA2LSB => false,
            abi::ELFDATA2MSB => true,
            data => return Err(ElfError::BadEncoding { data }),
        };
        let machine = if is_64 {
            check_extents::<FileHeader64<Endianness>>(data)?
        } else {
            check_extents::<FileHeader32<Endianness>>(data)?
        };
        let file = object::File::parse(data).map_err(ElfError::object)?;
        Ok(Elf {
            data,
            file,
            layout: Layout { big_endian, is_64 },
            machine,
        })
    }

    /// The whole file.
    pub fn data(&self) -> &'data [u8] {
        self.data
    }

    /// The sections with file contents; none when the section table was stripped.
    pub fn sections(&self) -> impl Iterator<Item = Section> + '_ {
        self.file.sections().filter_map(|s| Section::of(&s))
    }

    /// The first section with this name.
    pub fn section(&self, name: &str) -> Option<Section> {
        Section::of(&self.file.section_by_name(name)?)
    }

    /// The section whose file bytes hold `offset`, for naming where evidence sits.
    pub fn section_at(&self, offset: u64) -> Option<Section> {
        self.sections()
            .find(|s| s.offset <= offset && offset - s.offset < s.size)
    }

    /// `len` bytes at virtual address `vaddr`, when they are all in one loadable segment's
    /// file bytes.
    pub fn read_vaddr(&self, vaddr: u64, len: u64) -> Option<&'data [u8]> {
        self.file
            .segments()
            .find_map(|seg| seg.data_range(vaddr, len).ok().flatten())
    }

    /// The value (address) of the symbol `name` in `.symtab`, when the binary has one
    /// (not stripped).
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.file.symbol_by_name(name).map(|sym| sym.address())
    }

    /// Go's name for the architecture (`GOARCH`), or `machine <n>` for others.
    pub fn arch(&self) -> String {
        arch_name(self.machine, self.layout)
    }
}

fn truncated(what: &str, end: u64, len: u64) -> ElfError {
    ElfError::Truncated {
        what: what.to_string(),
        end,
        len,
    }
}

/// Check that the header, the program header table, every loadable segment, the section
/// header table and every section with contents lie inside `data`, in that order, so that
/// a partial file is named by the first thing it cuts. Returns `e_machine`.
fn check_extents<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<u16, ElfError> {
    let len = data.len() as u64;
    let header_len = std::mem::size_of::<H>() as u64;
    if len < header_len {
        return Err(truncated("the ELF header", header_len, len));
    }
    let header = H::parse(data).map_err(ElfError::object)?;
    let endian = header.endian().map_err(ElfError::object)?;
    let table_end = |offset: u64, entsize: u16, count: usize| {
        offset.saturating_add(u64::from(entsize).saturating_mul(count as u64))
    };

    let phnum = header.phnum(endian, data).map_err(ElfError::object)?;
    if phnum == 0 {
        return Err(ElfError::Malformed {
            what: "no program headers (not an executable)".into(),
        });
    }
    let ph_end = table_end(
        header.e_phoff(endian).into(),
        header.e_phentsize(endian),
        phnum,
    );
    if ph_end > len {
        return Err(truncated("the program header table", ph_end, len));
    }
    let segments = header
        .program_headers(endian, data)
        .map_err(ElfError::object)?;
    for (i, seg) in segments.iter().enumerate() {
        let (offset, size) = seg.file_range(endian);
        let end = offset.saturating_add(size);
        if seg.p_type(endian) == abi::PT_LOAD && end > len {
            return Err(truncated(&format!("loadable segment {i}"), end, len));
        }
    }

    let shoff: u64 = header.e_shoff(endian).into();
    let shnum = header.shnum(endian, data).map_err(ElfError::object)?;
    if shoff != 0 && shnum != 0 {
        let sh_end = table_end(shoff, header.e_shentsize(endian), shnum);
        if sh_end > len {
            return Err(truncated("the section header table", sh_end, len));
        }
        let sections = header
            .section_headers(endian, data)
            .map_err(ElfError::object)?;
        for (i, sec) in sections.iter().enumerate() {
            // `None` for SHT_NOBITS (.bss): no bytes in the file.
            let Some((offset, size)) = sec.file_range(endian) else {
                continue;
            };
            let end = offset.saturating_add(size);
            if end > len {
                return Err(truncated(&format!("section {i}"), end, len));
            }
        }
    }
    Ok(header.e_machine(endian))
}

/// Go's `GOARCH` for an ELF machine number.
pub fn arch_name(machine: u16, layout: Layout) -> String {
    let name = match (machine, layout.is_64, layout.big_endian) {
        (abi::EM_X86_64, ..) => "amd64",
        (abi::EM_AARCH64, ..) => "arm64",
        (abi::EM_386, ..) => "386",
        (abi::EM_ARM, ..) => "arm",
        (abi::EM_PPC64, true, false) => "ppc64le",
        (abi::EM_PPC64, true, true) => "ppc64",
        (abi::EM_S390, ..) => "s390x",
        (abi::EM_RISCV, true, _) => "riscv64",
        (abi::EM_MIPS, false, true) => "mips",
        (abi::EM_MIPS, false, false) => "mipsle",
        (abi::EM_MIPS, true, true) => "mips64",
        (abi::EM_MIPS, true, false) => "mips64le",
        (abi::EM_LOONGARCH, ..) => "loong64",
        _ => return format!("machine {machine}"),
    };
    name.to_string()
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

    /// Where [`TinyElf`] maps the file.
    pub(crate) const BASE: u64 = 0x40_0000;

    /// A minimal ELF executable of either class and byte order: the header, one PT_LOAD
    /// mapping the whole file at [`BASE`], one named section, `.shstrtab`, and a section
    /// table (null, `.shstrtab`, the section).
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct TinyElf {
        pub machine: u16,
        pub layout: Layout,
    }

    impl TinyElf {
        pub(crate) const LE64: Layout = Layout {
            big_endian: false,
            is_64: true,
        };

        /// The file offset of the section's contents.
        pub(crate) fn contents_offset(self) -> u64 {
            if self.layout.is_64 {
                64 + 56
            } else {
                52 + 32
            }
        }

        pub(crate) fn build(self, section: &str, contents: &[u8]) -> Vec<u8> {
            let Layout { big_endian, is_64 } = self.layout;
            let w = if is_64 { 8 } else { 4 };
            let put = |b: &mut Vec<u8>, at: usize, size: usize, v: u64| {
                let bytes = if big_endian {
                    v.to_be_bytes()[8 - size..].to_vec()
                } else {
                    v.to_le_bytes()[..size].to_vec()
                };
                b[at..at + size].copy_from_slice(&bytes);
            };
            let (ehsize, phentsize, shentsize) = if is_64 { (64, 56, 64) } else { (52, 32, 40) };

            let mut strtab = vec![0u8];
            let shstr_name = strtab.len() as u64;
            strtab.extend_from_slice(b".shstrtab\0");
            let sec_name = strtab.len() as u64;
            strtab.extend_from_slice(section.as_bytes());
            strtab.push(0);
            let data_off = self.contents_offset();
            let strtab_off = data_off + contents.len() as u64;
            let shoff = strtab_off + strtab.len() as u64;
            let total = shoff + 3 * shentsize as u64;

            let mut b = vec![0u8; ehsize];
            b[..4].copy_from_slice(&abi::ELFMAG);
            b[4] = if is_64 {
                abi::ELFCLASS64
            } else {
                abi::ELFCLASS32
            };
            b[5] = if big_endian {
                abi::ELFDATA2MSB
            } else {
                abi::ELFDATA2LSB
            };
            b[6] = abi::EV_CURRENT;
            put(&mut b, 16, 2, abi::ET_EXEC.into());
            put(&mut b, 18, 2, self.machine.into());
            put(&mut b, 20, 4, abi::EV_CURRENT.into());
            // e_phoff, e_shoff; then e_flags, e_ehsize, e_phentsize, e_phnum, e_shentsize,
            // e_shnum, e_shstrndx.
            put(&mut b, 24 + w, w, ehsize as u64);
            put(&mut b, 24 + 2 * w, w, shoff);
            let rest = 24 + 3 * w + 4;
            for (i, v) in [ehsize, phentsize, 1, shentsize, 3, 1]
                .into_iter()
                .enumerate()
            {
                put(&mut b, rest + 2 * i, 2, v as u64);
            }

            let mut ph = vec![0u8; phentsize];
            put(&mut ph, 0, 4, abi::PT_LOAD.into());
            let (vaddr, filesz) = if is_64 { (16, 32) } else { (8, 16) };
            put(&mut ph, vaddr, w, BASE);
            put(&mut ph, filesz, w, total);
            b.extend_from_slice(&ph);
            b.extend_from_slice(contents);
            b.extend_from_slice(&strtab);

            let sh = |name: u64, ty: u32, addr: u64, off: u64, size: u64| {
                let mut s = vec![0u8; shentsize];
                put(&mut s, 0, 4, name);
                put(&mut s, 4, 4, ty.into());
                let addr_at = 8 + w;
                put(&mut s, addr_at, w, addr);
                put(&mut s, addr_at + w, w, off);
                put(&mut s, addr_at + 2 * w, w, size);
                s
            };
            b.extend(sh(0, abi::SHT_NULL, 0, 0, 0));
            let strtab_len = strtab.len() as u64;
            b.extend(sh(shstr_name, abi::SHT_STRTAB, 0, strtab_off, strtab_len));
            let len = contents.len() as u64;
            b.extend(sh(
                sec_name,
                abi::SHT_PROGBITS,
                BASE + data_off,
                data_off,
                len,
            ));
            assert_eq!(b.len() as u64, total);
            b
        }
    }

    /// A 64-bit little-endian [`TinyElf`].
    pub(crate) fn tiny_elf64(machine: u16, section: &str, contents: &[u8]) -> Vec<u8> {
        TinyElf {
            machine,
            layout: TinyElf::LE64,
        }
        .build(section, contents)
    }

    #[test]
    fn reads_sections_segments_and_addresses_of_each_class_and_byte_order() {
        let cases = [
            (abi::EM_AARCH64, false, true, "arm64"),
            (abi::EM_X86_64, false, true, "amd64"),
            (abi::EM_PPC64, true, true, "ppc64"),
            (abi::EM_386, false, false, "386"),
            (abi::EM_MIPS, true, false, "mips"),
        ];
        for (machine, big_endian, is_64, arch) in cases {
            let layout = Layout { big_endian, is_64 };
            let tiny = TinyElf { machine, layout };
            let bytes = tiny.build(".go.buildinfo", b"0123456789abcdef");
            let elf = Elf::parse(&bytes).unwrap_or_else(|e| panic!("{arch}: {e}"));
            assert_eq!((elf.arch(), elf.layout), (arch.to_string(), layout));
            let sec = elf.section(".go.buildinfo").unwrap();
            assert_eq!(sec.offset, tiny.contents_offset(), "{arch}");
            assert_eq!(sec.addr, BASE + sec.offset, "{arch}");
            assert_eq!(&bytes[sec.offset as usize..][..16], b"0123456789abcdef");
            assert_eq!(elf.read_vaddr(sec.addr + 4, 3), Some(&b"456"[..]), "{arch}");
            assert_eq!(elf.read_vaddr(0x10, 3), None, "{arch}");
            let total = bytes.len() as u64;
            assert_eq!(elf.read_vaddr(BASE + total - 2, 3), None, "{arch}");
            let names: Vec<String> = elf.sections().map(|s| s.name).collect();
            assert_eq!(names, [".shstrtab", ".go.buildinfo"], "{arch}");
            assert_eq!(
                elf.section_at(sec.offset + 2).map(|s| s.name),
                Some(".go.buildinfo".into()),
                "{arch}"
            );
            assert_eq!(elf.section_at(1), None, "{arch}");
            assert_eq!(elf.symbol("runtime.buildVersion"), None, "{arch}: stripped");
        }
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
        let mut bad_phentsize = good.clone();
        bad_phentsize[54] = 55;
        let mut cut_section_table = good.clone();
        cut_section_table[40] += 1; // e_shoff one byte later: the table runs past the end
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
                abi::ELFMAG.to_vec(),
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
                "section table past the end",
                cut_section_table,
                "the section header table ends at byte 331 but the file has only 330 bytes",
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
            (
                "program header size",
                bad_phentsize,
                "malformed ELF: invalid ELF program header entry size",
            ),
        ];
        for (name, bytes, want) in cases {
            let got = Elf::parse(&bytes).map(|_| ()).unwrap_err().to_string();
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn arch_names_follow_goarch() {
        let le64 = TinyElf::LE64;
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
