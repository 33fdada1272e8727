//! Opening input files: plain files as they are, a `.zip` as its single data member, read in
//! place (streamed out of the archive, never unpacked to disk). And the content hash that
//! de-duplication compares, taken over the decompressed bytes so that a zipped and an
//! unzipped copy of one file are recognised as the same.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::reader::ReadError;

/// Whether `path` is read as a zip archive (by extension).
pub fn is_zip(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// Whether a zip entry is metadata to ignore: folders, `__MACOSX/` and dot-files.
fn ignored_member(name: &str) -> bool {
    name.ends_with('/')
        || name.starts_with("__MACOSX/")
        || name.contains("/__MACOSX/")
        || name
            .rsplit('/')
            .next()
            .is_some_and(|base| base.starts_with('.'))
}

/// Calls `f` with a reader over the file's data: the file itself, or a zip's single data
/// member (`__MACOSX/` entries and dot-files ignored; none or several is an error).
pub fn with_data<T>(
    path: &Path,
    f: &mut dyn FnMut(&mut dyn Read) -> Result<T, ReadError>,
) -> Result<T, ReadError> {
    let io = |source| ReadError::Io {
        file: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    if !is_zip(path) {
        let mut r = BufReader::with_capacity(1 << 16, file);
        return f(&mut r);
    }
    let zerr = |e: zip::result::ZipError| ReadError::Zip {
        file: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(zerr)?;
    let mut data = Vec::new();
    let mut all = Vec::new();
    for i in 0..archive.len() {
        let name = match archive.name_for_index(i) {
            Some(Ok(n)) => n.into_owned(),
            Some(Err(e)) => return Err(zerr(e)),
            None => continue,
        };
        if !ignored_member(&name) {
            data.push(i);
        }
        all.push(name);
    }
    if data.len() != 1 {
        let members = data
            .iter()
            .filter_map(|&i| all.get(i).cloned())
            .collect::<Vec<_>>();
        return Err(ReadError::ZipMembers {
            file: path.to_path_buf(),
            members: if members.is_empty() { all } else { members },
        });
    }
    let mut member = archive.by_index(data[0]).map_err(zerr)?;
    f(&mut member)
}

/// blake3 of the file's (decompressed) data, and its length.
pub fn content_hash(path: &Path) -> Result<([u8; 32], u64), ReadError> {
    if !is_zip(path) {
        let mut h = blake3::Hasher::new();
        h.update_mmap(path).map_err(|source| ReadError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        return Ok((*h.finalize().as_bytes(), h.count()));
    }
    with_data(path, &mut |r| {
        let mut h = blake3::Hasher::new();
        let n = std::io::copy(r, &mut h).map_err(|source| ReadError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Ok((*h.finalize().as_bytes(), n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(path: &Path, members: &[(&str, &[u8])]) {
        let mut w = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, data) in members {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn single_member_is_read_and_metadata_ignored() {
        let d = tempfile::tempdir().unwrap();
        let z = d.path().join("a.csv.zip");
        zip_with(
            &z,
            &[
                ("a.csv", b"hello"),
                ("__MACOSX/._a.csv", b"junk"),
                (".DS_Store", b"x"),
            ],
        );
        let mut got = String::new();
        with_data(&z, &mut |r| {
            r.read_to_string(&mut got).map_err(|source| ReadError::Io {
                file: z.clone(),
                source,
            })
        })
        .unwrap();
        assert_eq!(got, "hello");
        let plain = d.path().join("a.csv");
        std::fs::write(&plain, b"hello").unwrap();
        assert_eq!(content_hash(&z).unwrap(), content_hash(&plain).unwrap());
    }

    #[test]
    fn two_data_members_are_an_error_naming_them() {
        let d = tempfile::tempdir().unwrap();
        let z = d.path().join("two.zip");
        zip_with(&z, &[("a.csv", b"1"), ("b.csv", b"2")]);
        let e = content_hash(&z).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ReadError::ZipMembers { ref members, .. } if members.len() == 2));
        assert!(msg.contains("two.zip") && msg.contains("a.csv") && msg.contains("b.csv"));
    }

    #[test]
    fn not_a_zip_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let z = d.path().join("bad.zip");
        std::fs::write(&z, b"not a zip").unwrap();
        assert!(matches!(content_hash(&z), Err(ReadError::Zip { .. })));
    }
}
