//! Reading files: one file's text (within the limits, with its failure kept for the retries),
//! and many files at once on the reading threads.

use super::*;

/// How a file that was read failed.
pub(super) enum Failure {
    /// It could not be read: to be read again soon (see [`retry`]).
    Read(ManifestError),
    /// It was read and is not valid (or over a limit): reported once per content.
    Invalid(ManifestError),
}

/// One file as [`read_all`] read it.
pub(super) struct ReadFile {
    pub(super) path: PathBuf,
    /// Of the content read (taken from the open file), or of the path if it could not be
    /// read; `None` if neither could be had.
    pub(super) fingerprint: Option<Fingerprint>,
    pub(super) parsed: Result<Parsed, Failure>,
}

/// How files are read: within which limits, and opened how.
#[derive(Clone, Copy)]
pub(super) struct Reader {
    pub(super) limits: Limits,
    pub(super) open: fn(&Path) -> std::io::Result<std::fs::File>,
}

/// Reads and parses one file; its fingerprint comes from the open file, so it describes the
/// content read even if the file is replaced meanwhile. A file over a size limit is not read
/// (not even the part within the limit), and one nesting too deep not parsed.
pub(super) fn read_file(path: PathBuf, reader: Reader) -> ReadFile {
    use std::io::Read;
    let max = reader.limits.max_file_size;
    let invalid = |path: &Path, line: Option<usize>, message: String| {
        Failure::Invalid(ManifestError {
            path: path.to_owned(),
            line,
            message,
        })
    };
    let read = (reader.open)(&path).and_then(|file| {
        let meta = file.metadata()?;
        let fingerprint = fingerprint_of(&meta);
        if meta.len() > max {
            return Ok((fingerprint, Err(meta.len())));
        }
        // No more than the limit (and one byte to tell it was passed), even if the file
        // grows meanwhile.
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
        Ok((fingerprint, Ok(bytes)))
    });
    let (fingerprint, bytes) = match read {
        Ok(read) => read,
        // Removed since it was listed: its objects go, as when the watcher names it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return ReadFile {
                parsed: Ok(Parsed::default()),
                fingerprint: None,
                path,
            };
        }
        Err(e) => {
            return ReadFile {
                parsed: Err(Failure::Read(ManifestError {
                    path: path.clone(),
                    line: None,
                    message: format!("cannot read: {e}; it will be read again"),
                })),
                fingerprint: None,
                path,
            };
        }
    };
    let parsed = match bytes {
        Ok(bytes) if bytes.len() as u64 > max => Err(invalid(
            &path,
            None,
            reader.limits.too_large_message(bytes.len() as u64),
        )),
        Err(len) => Err(invalid(&path, None, reader.limits.too_large_message(len))),
        Ok(bytes) => match String::from_utf8(bytes) {
            Err(e) => Err(invalid(
                &path,
                None,
                format!("not UTF-8 text: {}", e.utf8_error()),
            )),
            Ok(text) => {
                let yaml = !is_json(&path);
                match limits::too_deep(&text, yaml, reader.limits.max_depth) {
                    Some(line) => Err(invalid(&path, Some(line), reader.limits.too_deep_message())),
                    None => parse_manifests(&path, &text).map_err(Failure::Invalid),
                }
            }
        },
    };
    ReadFile {
        parsed,
        fingerprint: Some(fingerprint),
        path,
    }
}

pub(super) fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

/// Reads and parses `files`, in order; on several threads when there are many (a first load
/// of thousands of files is bound by parsing).
pub(super) fn read_all(files: Vec<PathBuf>, reader: Reader) -> Vec<ReadFile> {
    /// Below this, one thread is quicker than starting others.
    const PER_THREAD: usize = 256;
    let threads = svc_controller::runtime::system::available_cpus()
        .min(files.len() / PER_THREAD)
        .min(8);
    if threads <= 1 {
        return files
            .into_iter()
            .map(|path| read_file(path, reader))
            .collect();
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    // Reading yields to the engine (see `crate::priority`).
                    crate::source::priority::lower_this_thread();
                    part.iter()
                        .map(|path| read_file(path.clone(), reader))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .zip(files.chunks(chunk))
            .flat_map(|(worker, part)| {
                // A worker that panicked (a bug in a parser) fails its files, not the daemon.
                worker.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|path| ReadFile {
                            path: path.clone(),
                            fingerprint: None,
                            parsed: Err(Failure::Invalid(ManifestError {
                                path: path.clone(),
                                line: None,
                                message: "the parser failed on this file".into(),
                            })),
                        })
                        .collect()
                })
            })
            .collect()
    })
}
