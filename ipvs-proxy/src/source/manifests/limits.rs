//! Limits on one manifest file, checked before it is parsed: its size (from its metadata,
//! before it is read) and how deeply its text nests (by a linear pre-scan of the text).
//!
//! Both bound what one file can cost the source's thread: the YAML parser's time grows with
//! the size of a file and, worse than linearly, with how deeply flow collections nest
//! (`a: [[[[…]]]]`), and every other file's changes wait while it runs. A file over a limit
//! is reported once per content, like a parse error, and what it defined before is kept.

/// The default of [`Limits::max_file_size`]: 8 MiB. The API server stores no object larger
/// than 1.5 MiB (etcd's request limit), and a Service or EndpointSlice is a few hundred bytes
/// of YAML, so this leaves room for the largest object five times over, or for a `kind: List`
/// of over ten thousand Services in one file; a larger file is a mistake (or an attack) more
/// likely than a manifest, and a folder of generated Services loads faster split into
/// several files anyway (they are parsed in parallel).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 8 << 20;

/// The default of [`Limits::max_depth`]: 100 levels. A Kubernetes object nests about 20
/// levels at most (a Service fewer than 10), as counted here. The YAML decoder refuses more
/// than 128 levels too, but only after its parser has read the whole nesting, which is where
/// the time goes.
pub const DEFAULT_MAX_DEPTH: usize = 100;

/// Limits on what one manifest file may be (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest file read, in bytes (`--manifests-max-file-size`, `manifestsMaxFileSize`).
    /// Checked from the file's metadata before it is read, and no more than this is read even
    /// if the file grows meanwhile.
    pub max_file_size: u64,
    /// The deepest nesting of collections (block indentation levels, `- ` entries and flow
    /// brackets together) allowed (`--manifests-max-depth`, `manifestsMaxDepth`).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

impl Limits {
    /// What to say of a file of `len` bytes, over [`Limits::max_file_size`].
    pub(super) fn too_large_message(&self, len: u64) -> String {
        format!(
            "the file is {len} bytes, over the limit of {} (--manifests-max-file-size, \
             manifestsMaxFileSize); not read",
            self.max_file_size
        )
    }

    /// What to say of a file nesting deeper than [`Limits::max_depth`].
    pub(super) fn too_deep_message(&self) -> String {
        format!(
            "nested more than {} levels deep (--manifests-max-depth, manifestsMaxDepth); \
             not parsed",
            self.max_depth
        )
    }
}

/// The first line (1-based) on which `text` nests deeper than `max`, if any: a guard run
/// before the parser, in one pass over the bytes, not a parser. Where it cannot tell what the
/// parser will make of the text, it counts more, not less, so that a file it lets through
/// does not nest deeper:
///
/// - The nesting counted is the block indentation levels open (each deeper indentation opens
///   one), plus the `- ` and `? ` indicators that start a line's content (`- - - a` nests
///   three levels on one line), plus the flow brackets open (`[`, `{`).
/// - Brackets inside comments and block scalars (`|`, `>`) are text, not nesting. Brackets
///   inside quoted strings are counted too: a quote the scan took for the start of a string
///   where the parser sees none would otherwise hide the nesting after it. So the brackets
///   are counted twice, once skipping strings and once blind to quotes (closing brackets
///   never below zero), and the larger count is the one compared: a string's closing
///   brackets hide no opening ones, and only a string with dozens of unbalanced opening
///   brackets (which no real manifest has) could be taken for nesting. A quote starts a
///   string only where YAML starts a node: not inside a plain scalar, nor at the start of a
///   line that goes on with the plain scalar of a less indented line.
/// - YAML documents (`---`) are counted each from zero, as they are parsed one by one.
///
/// `yaml` is false for JSON, where only brackets nest and strings are never in doubt: a
/// quicker loop counts them exactly (JSON files are the ones loaded in bulk, and their parser
/// is fast enough for this scan to show).
pub(super) fn too_deep(text: &str, yaml: bool, max: usize) -> Option<usize> {
    if !yaml {
        return json_too_deep(text.as_bytes(), max);
    }
    let mut scan = DepthScan::new(yaml, max);
    for (i, line) in text.split('\n').enumerate() {
        if scan.line(line.as_bytes()) {
            return Some(i + 1);
        }
    }
    None
}

/// [`too_deep`] for JSON.
fn json_too_deep(bytes: &[u8], max: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (at, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// The state of [`too_deep`] between lines.
struct DepthScan {
    yaml: bool,
    max: usize,
    /// The indentation of each block level open.
    indents: Vec<usize>,
    /// The block depth of the last block line: where a flow collection or string that goes
    /// on over the next lines nests from.
    flow_base: usize,
    /// Flow brackets open, outside quoted strings.
    flow: usize,
    /// Flow brackets open, counted blind to quotes.
    blind: usize,
    quote: Quote,
    /// The indentation of the line that started a block scalar: the lines indented more are
    /// its text.
    block_scalar: Option<usize>,
    /// Whether a node may start here (where a quote starts a string): at the start of a
    /// line's content, after an indicator (`- `, `? `, `: `) or a flow `[`, `{`, `,`.
    node_start: bool,
    /// The indentation of the block line that ended in a plain scalar: a line indented more
    /// goes on with that scalar (a quote at its start is text, not a string).
    plain_indent: Option<usize>,
    /// Whether the last line scanned ended in a comment.
    comment: bool,
}

impl DepthScan {
    fn new(yaml: bool, max: usize) -> Self {
        Self {
            yaml,
            max,
            indents: Vec::new(),
            flow_base: 0,
            flow: 0,
            blind: 0,
            quote: Quote::None,
            block_scalar: None,
            node_start: true,
            plain_indent: None,
            comment: false,
        }
    }

    /// Takes in one line (without its `\n`); true when it nests too deep.
    fn line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.yaml && is_document_marker(line) {
            *self = Self::new(self.yaml, self.max);
            return false;
        }
        if self.quote != Quote::None || self.flow > 0 || !self.yaml {
            // Inside a string or a flow collection (or JSON): indentation means nothing.
            return self.inline(line, 0, self.flow_base);
        }
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let rest = &line[indent..];
        if rest.iter().all(|b| b.is_ascii_whitespace()) || rest.first() == Some(&b'#') {
            return false;
        }
        if let Some(header) = self.block_scalar {
            if indent > header {
                return false;
            }
            self.block_scalar = None;
        }
        let continuation = self.plain_indent.is_some_and(|plain| indent > plain);
        while self.indents.last().is_some_and(|&top| top > indent) {
            self.indents.pop();
        }
        if self.indents.last().is_none_or(|&top| top < indent) {
            self.indents.push(indent);
        }
        // Compact nesting: `- - a`, `? - a`.
        let mut depth = self.indents.len();
        let mut at = indent;
        while let Some(&b) = line.get(at)
            && (b == b'-' || b == b'?')
            && line.get(at + 1).is_none_or(|&n| n == b' ' || n == b'\t')
        {
            depth += 1;
            at += 1;
            while line.get(at).is_some_and(|&n| n == b' ' || n == b'\t') {
                at += 1;
            }
        }
        if depth > self.max {
            return true;
        }
        self.node_start = !continuation;
        // Where a flow collection or string starting on this line nests from.
        self.flow_base = depth;
        self.comment = false;
        if self.inline(line, at, depth) {
            return true;
        }
        let open = self.quote != Quote::None || self.flow > 0;
        if !open && ends_with_block_scalar_header(line) {
            self.block_scalar = Some(indent);
        } else if !continuation {
            let plain = !open && !self.node_start && !self.comment;
            self.plain_indent = plain.then_some(indent);
        }
        false
    }

    /// Scans `line` from `from`, with `base` levels of block nesting around it.
    fn inline(&mut self, line: &[u8], from: usize, base: usize) -> bool {
        let mut i = from;
        while let Some(&b) = line.get(i) {
            match self.quote {
                Quote::Single => {
                    if self.count_blind(b, base) {
                        return true;
                    }
                    if b == b'\'' {
                        if line.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            self.quote = Quote::None;
                            self.node_start = false;
                        }
                    }
                }
                Quote::Double => {
                    if self.count_blind(b, base) {
                        return true;
                    }
                    if b == b'\\' {
                        i += 1;
                    } else if b == b'"' {
                        self.quote = Quote::None;
                        self.node_start = false;
                    }
                }
                Quote::None => match b {
                    b'#' if self.yaml
                        && (i == 0 || matches!(line.get(i - 1), Some(b' ' | b'\t'))) =>
                    {
                        self.comment = true;
                        break;
                    }
                    b'[' | b'{' => {
                        self.flow += 1;
                        self.blind += 1;
                        self.node_start = true;
                        if base + self.flow.max(self.blind) > self.max {
                            return true;
                        }
                    }
                    b']' | b'}' => {
                        self.flow = self.flow.saturating_sub(1);
                        self.blind = self.blind.saturating_sub(1);
                        self.node_start = false;
                    }
                    b',' if self.flow > 0 => self.node_start = true,
                    b':' => {
                        // A value indicator: followed by a space, or anywhere in a flow.
                        self.node_start = self.flow > 0
                            || line.get(i + 1).is_none_or(|&n| n == b' ' || n == b'\t');
                    }
                    b'-' | b'?'
                        if self.node_start
                            && line.get(i + 1).is_none_or(|&n| n == b' ' || n == b'\t') => {}
                    b' ' | b'\t' => {}
                    b'"' if self.node_start || !self.yaml => self.quote = Quote::Double,
                    b'\'' if self.node_start && self.yaml => self.quote = Quote::Single,
                    _ => self.node_start = false,
                },
            }
            i += 1;
        }
        false
    }

    /// Counts a bracket inside what the quote-aware count takes for a string; true when it
    /// nests too deep.
    fn count_blind(&mut self, b: u8, base: usize) -> bool {
        match b {
            b'[' | b'{' => {
                self.blind += 1;
                base + self.blind > self.max
            }
            b']' | b'}' => {
                self.blind = self.blind.saturating_sub(1);
                false
            }
            _ => false,
        }
    }
}

/// A line `documents` splits YAML documents at.
fn is_document_marker(line: &[u8]) -> bool {
    line == b"---" || line.starts_with(b"--- ") || line.starts_with(b"---\t") || line == b"..."
}

/// Whether a block line ends with a block scalar's header (`key: |`, `- >-`, `key: |2`), a
/// comment after it allowed.
fn ends_with_block_scalar_header(line: &[u8]) -> bool {
    let text = match line.windows(2).position(|w| w == b" #") {
        Some(comment) => &line[..comment],
        None => line,
    };
    let text = text.trim_ascii_end();
    let Some(start) = text
        .iter()
        .rposition(|&b| b == b'|' || b == b'>')
        .filter(|&p| {
            text[p + 1..]
                .iter()
                .all(|&b| b == b'-' || b == b'+' || b.is_ascii_digit())
        })
    else {
        return false;
    };
    let before = text[..start].trim_ascii_end();
    before.is_empty() || before.ends_with(b":") || before.ends_with(b"-") || before.ends_with(b"?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_flow_block_and_compact_nesting() {
        assert_eq!(too_deep("a: [[[1]]]\n", true, 4), None);
        assert_eq!(too_deep("a: [[[[1]]]]\n", true, 4), Some(1));
        assert_eq!(too_deep("a:\n b:\n  c:\n   d: 1\n", true, 4), None);
        assert_eq!(
            too_deep("a:\n b:\n  c:\n   d:\n    e: 1\n", true, 4),
            Some(5)
        );
        // The line's own level, and one per entry started on it.
        assert_eq!(too_deep("- - - 1\n", true, 4), None);
        assert_eq!(too_deep("- - - - 1\n", true, 4), Some(1));
        // Back out of a level: it counts again from there.
        assert_eq!(too_deep("a:\n b: [1]\nc: [[[1]]]\n", true, 4), None);
        // JSON: brackets alone, outside strings.
        assert_eq!(too_deep("{\"a\": [[[1]]]}", false, 4), None);
        assert_eq!(too_deep("{\"a\":\n [[[[1]]]]}", false, 4), Some(2));
        let strings = r#"{"a": "[[[[[\"]]]]", "b": [[["{{{{"]]]}"#;
        assert_eq!(too_deep(strings, false, 4), None);
        // A flow collection over several lines keeps its depth.
        assert_eq!(too_deep("a: [\n  [\n   [\n  [1]]]]\n", true, 4), Some(4));
    }

    #[test]
    fn brackets_in_comments_and_block_scalars_are_text() {
        let deep = "[".repeat(50);
        for text in [
            format!("a: 1 # {deep}\n"),
            format!("# {deep}\n"),
            format!("a: |\n  {deep}\n  more\nb: 1\n"),
            format!("a: >-\n  {deep}\n\n  more\nb: 1\n"),
            format!("- |+\n  {deep}\n- x\n"),
            format!("a: 'x # y'\n# {deep}\n"),
        ] {
            assert_eq!(too_deep(&text, true, 10), None, "{text}");
        }
        // Not a block scalar: a `|` inside a plain or quoted scalar.
        assert_eq!(too_deep(&format!("a: x |\n  {deep}\n"), true, 10), Some(2));
        assert_eq!(
            too_deep(&format!("a: 'x |'\n  {deep}\n"), true, 10),
            Some(2)
        );
        // Not a comment: a `#` inside a word.
        assert_eq!(too_deep(&format!("a: x#{deep}\n"), true, 10), Some(1));
    }

    #[test]
    fn strings_are_counted_but_their_closing_brackets_hide_nothing() {
        // Brackets in strings count (no real manifest has many unbalanced ones), balanced
        // ones (embedded JSON) cost nothing, and closing ones never hide opening ones.
        let some = "[".repeat(5);
        assert_eq!(too_deep(&format!("a: \"{some}\"\n"), true, 10), None);
        assert_eq!(too_deep(&format!("a: '{some}'\n"), true, 10), None);
        let json = "{\\\"a\\\":[{\\\"b\\\":[1]}]}".repeat(20);
        assert_eq!(too_deep(&format!("a: \"{json}\"\n"), true, 10), None);
        let closing = "]".repeat(50);
        let deep = "[".repeat(20);
        for text in [
            format!("a: [\"{closing}\", {deep}1]\n"),
            format!("a: ['{closing}', {deep}1]\n"),
            format!("a: x 'y\nb: [\"{closing}\", {deep}1]\n"),
        ] {
            assert!(too_deep(&text, true, 10).is_some(), "{text}");
        }
    }

    #[test]
    fn a_quote_it_misreads_does_not_hide_nesting() {
        // Whatever the quote-aware count makes of the quotes, the blind count sees the
        // brackets.
        let deep = "[".repeat(50);
        assert_eq!(too_deep(&format!("a: 'x\n{deep}\n"), true, 10), Some(2));
        // A quote inside a plain scalar starts no string, nor one at the start of a line
        // that goes on with a plain scalar; their closing brackets drain neither count.
        assert_eq!(
            too_deep(&format!("a: x 'y\nb: {deep}1\n"), true, 10),
            Some(2)
        );
        let drained = "[\"]\", ".repeat(50);
        let text = format!("a: x\n  'y\nb: {drained}1\n");
        assert_eq!(too_deep(&text, true, 10), Some(3));
        // A quote that starts a line's content does start a string.
        let some = "]".repeat(50);
        let text = format!("a:\n  'y {some}'\nb: [[1]]\n");
        assert_eq!(too_deep(&text, true, 4), None);
    }

    #[test]
    fn documents_count_from_zero() {
        let three = "[[[1]]]\n";
        let text = format!("{three}---\n{three}---\n{three}");
        assert_eq!(too_deep(&text, true, 4), None);
        // Unclosed brackets do not carry into the next document.
        assert_eq!(too_deep("a: [[[\n---\nb: [[[1]]]\n", true, 4), None);
    }

    #[test]
    fn a_real_manifest_is_far_below_the_default() {
        let service = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {\"apiVersion\":\"v1\",\"kind\":\"Service\",\"spec\":{\"ports\":[{\"port\":80}]}}
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    targetPort: 8080
  selector: {app: web}
";
        assert_eq!(too_deep(service, true, 6), None);
        assert_eq!(too_deep(service, true, DEFAULT_MAX_DEPTH), None);
    }
}
