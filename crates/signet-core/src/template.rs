//! Entry templates: the `{{ .Field }}` subset of Go's `text/template` that spire-controller-manager
//! manifests use (`spiffeIDTemplate`, `workloadSelectorTemplates`, `dnsNameTemplates`).
//!
//! A template is parsed once when its resource is loaded and rendered per pod against a
//! [`TemplateContext`]. Supported actions: a field path (`{{ .PodMeta.Name }}`, map keys by dot
//! `{{ .PodMeta.Labels.app }}`), `{{ index .PodMeta.Labels "app.kubernetes.io/name" }}` with one or
//! more string keys, comments `{{/* ... */}}` and the `{{-`/`-}}` whitespace trim markers. Anything
//! else (pipelines, functions, variables, control flow) is a parse error, never a silent empty string.
//! Unlike Go's default, a missing map key is an error: an identity must not be built from a blank.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// Longest template source accepted.
pub const MAX_TEMPLATE_BYTES: usize = 4096;
/// Longest rendered output accepted (a SPIFFE ID is at most 2048 bytes).
pub const MAX_RENDERED_BYTES: usize = 4096;

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The source is longer than [`MAX_TEMPLATE_BYTES`].
    #[error("template is longer than {MAX_TEMPLATE_BYTES} bytes")]
    TooLong,
    /// A `{{` has no matching `}}`.
    #[error("unclosed action starting at byte {0}")]
    Unclosed(usize),
    /// An action is empty.
    #[error("empty action at byte {0}")]
    EmptyAction(usize),
    /// A comment is not of the form `{{/* ... */}}`.
    #[error("unterminated comment at byte {0}")]
    BadComment(usize),
    /// The action uses a template feature Signet does not support.
    #[error(
        "unsupported action {action:?} at byte {offset}: only field paths (.A.B) and `index` are supported"
    )]
    Unsupported {
        /// Byte offset of the action.
        offset: usize,
        /// The action text.
        action: String,
    },
    /// A field path is malformed.
    #[error("bad field path {path:?} at byte {offset}")]
    BadPath {
        /// Byte offset of the action.
        offset: usize,
        /// The path text.
        path: String,
    },
    /// An `index` argument is malformed.
    #[error("bad index argument at byte {offset}: {reason}")]
    BadIndex {
        /// Byte offset of the action.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a template does not render for some data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The path names no field of the data.
    #[error("unknown field .{0}")]
    UnknownField(String),
    /// The path names a structure or map, which cannot be printed.
    #[error(".{0} is not a printable value")]
    NotPrintable(String),
    /// `index` was applied to something that is not a map.
    #[error("cannot index .{0}: it is not a map")]
    NotAMap(String),
    /// A map has no such key.
    #[error("map .{path} has no key {key:?}")]
    MissingKey {
        /// The map's path.
        path: String,
        /// The key.
        key: String,
    },
    /// The output is longer than [`MAX_RENDERED_BYTES`].
    #[error("rendered value is longer than {MAX_RENDERED_BYTES} bytes")]
    TooLong,
}

/// What a field path resolves to.
#[derive(Debug)]
#[non_exhaustive]
pub enum Value<'a> {
    /// A printable scalar.
    Text(Cow<'a, str>),
    /// A string map (labels, annotations, node selector).
    Map(&'a BTreeMap<String, String>),
    /// A structure: exists but cannot be printed.
    Struct,
}

/// The data a template renders against.
pub trait TemplateContext {
    /// Resolves a field path such as `["PodMeta", "Labels"]`; `None` when no such field exists.
    fn lookup(&self, path: &[String]) -> Option<Value<'_>>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Vec<String>),
    Index {
        path: Vec<String>,
        keys: Vec<String>,
    },
}

/// A parsed template.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Template {
    /// Parses a template.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::TooLong);
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            text.push_str(&rest[..open]);
            let start = offset + open;
            let after_open = &rest[open + 2..];
            let close = after_open
                .find("}}")
                .ok_or(TemplateError::Unclosed(start))?;
            let mut action = &after_open[..close];
            if let Some(trimmed) = action.strip_prefix("- ").or_else(|| {
                // `{{-` must be followed by whitespace to be a trim marker, as in Go.
                action
                    .strip_prefix('-')
                    .filter(|a| a.starts_with(char::is_whitespace))
            }) {
                text.truncate(text.trim_end().len());
                action = trimmed;
            }
            let mut trim_after = false;
            if let Some(trimmed) = action.strip_suffix(" -").or_else(|| {
                action
                    .strip_suffix('-')
                    .filter(|a| a.ends_with(char::is_whitespace))
            }) {
                trim_after = true;
                action = trimmed;
            }
            if let Some(part) = parse_action(action.trim(), start)? {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(part);
            }
            let consumed = open + 2 + close + 2;
            rest = &rest[consumed..];
            offset += consumed;
            if trim_after {
                let trimmed = rest.trim_start();
                offset += rest.len() - trimmed.len();
                rest = trimmed;
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template has no actions (renders to itself).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Renders the template against `context`.
    pub fn render(&self, context: &dyn TemplateContext) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(path) => out.push_str(&resolve_text(context, path)?),
                Part::Index { path, keys } => out.push_str(&resolve_index(context, path, keys)?),
            }
            if out.len() > MAX_RENDERED_BYTES {
                return Err(RenderError::TooLong);
            }
        }
        Ok(out)
    }
}

fn parse_action(action: &str, offset: usize) -> Result<Option<Part>, TemplateError> {
    if action.is_empty() {
        return Err(TemplateError::EmptyAction(offset));
    }
    if let Some(comment) = action.strip_prefix("/*") {
        return if comment.ends_with("*/") {
            Ok(None)
        } else {
            Err(TemplateError::BadComment(offset))
        };
    }
    if action.starts_with('.') {
        if action.contains(char::is_whitespace) || action.contains('|') {
            return Err(unsupported(action, offset));
        }
        return parse_path(action, offset).map(|path| Some(Part::Field(path)));
    }
    if let Some(args) = action.strip_prefix("index") {
        if !args.starts_with(char::is_whitespace) {
            return Err(unsupported(action, offset));
        }
        return parse_index(args.trim(), offset).map(Some);
    }
    Err(unsupported(action, offset))
}

fn unsupported(action: &str, offset: usize) -> TemplateError {
    TemplateError::Unsupported {
        offset,
        action: action.chars().take(64).collect(),
    }
}

fn parse_path(text: &str, offset: usize) -> Result<Vec<String>, TemplateError> {
    let bad = || TemplateError::BadPath {
        offset,
        path: text.chars().take(64).collect(),
    };
    let body = text.strip_prefix('.').ok_or_else(bad)?;
    let mut path = Vec::new();
    for segment in body.split('.') {
        let mut chars = segment.chars();
        let valid_start = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !valid_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad());
        }
        path.push(segment.to_owned());
    }
    Ok(path)
}

fn parse_index(args: &str, offset: usize) -> Result<Part, TemplateError> {
    let (path_text, mut rest) =
        args.split_once(char::is_whitespace)
            .ok_or(TemplateError::BadIndex {
                offset,
                reason: "index needs a map and at least one key",
            })?;
    let path = parse_path(path_text, offset)?;
    let mut keys = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (key, remaining) = parse_string_literal(rest).ok_or(TemplateError::BadIndex {
            offset,
            reason: "keys must be quoted strings",
        })?;
        keys.push(key);
        rest = remaining;
        if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
            return Err(TemplateError::BadIndex {
                offset,
                reason: "keys must be separated by spaces",
            });
        }
    }
    if keys.is_empty() {
        return Err(TemplateError::BadIndex {
            offset,
            reason: "index needs a map and at least one key",
        });
    }
    Ok(Part::Index { path, keys })
}

/// Parses a Go string literal (`"..."` with `\"`, `\\`, `\n`, `\t` escapes, or a raw `` `...` ``)
/// at the start of `text`, returning the value and the rest.
fn parse_string_literal(text: &str) -> Option<(String, &str)> {
    if let Some(raw) = text.strip_prefix('`') {
        let end = raw.find('`')?;
        return Some((raw[..end].to_owned(), &raw[end + 1..]));
    }
    let body = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[i + 1..])),
            '\\' => match chars.next()?.1 {
                '"' => value.push('"'),
                '\\' => value.push('\\'),
                'n' => value.push('\n'),
                't' => value.push('\t'),
                _ => return None,
            },
            '\n' => return None,
            c => value.push(c),
        }
    }
    None
}

fn dotted(path: &[String]) -> String {
    path.join(".")
}

/// Resolves a path, letting the last segment select a key of a map (`.PodMeta.Labels.app`).
fn resolve_text<'c>(
    context: &'c dyn TemplateContext,
    path: &[String],
) -> Result<Cow<'c, str>, RenderError> {
    match context.lookup(path) {
        Some(Value::Text(text)) => Ok(text),
        Some(_) => Err(RenderError::NotPrintable(dotted(path))),
        None => {
            let Some((key, map_path)) = path.split_last() else {
                return Err(RenderError::UnknownField(String::new()));
            };
            match context.lookup(map_path) {
                Some(Value::Map(map)) => map
                    .get(key)
                    .map(|v| Cow::Borrowed(v.as_str()))
                    .ok_or_else(|| RenderError::MissingKey {
                        path: dotted(map_path),
                        key: key.clone(),
                    }),
                _ => Err(RenderError::UnknownField(dotted(path))),
            }
        }
    }
}

fn resolve_index<'c>(
    context: &'c dyn TemplateContext,
    path: &[String],
    keys: &[String],
) -> Result<Cow<'c, str>, RenderError> {
    let map = match context.lookup(path) {
        Some(Value::Map(map)) => map,
        Some(_) => return Err(RenderError::NotAMap(dotted(path))),
        None => return Err(RenderError::UnknownField(dotted(path))),
    };
    // Maps hold strings, so only one level of keys can apply.
    let (first, more) = keys
        .split_first()
        .ok_or(RenderError::NotAMap(dotted(path)))?;
    let value = map.get(first).ok_or_else(|| RenderError::MissingKey {
        path: dotted(path),
        key: first.clone(),
    })?;
    if !more.is_empty() {
        return Err(RenderError::NotAMap(format!("{}[{first:?}]", dotted(path))));
    }
    Ok(Cow::Borrowed(value.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Data {
        labels: BTreeMap<String, String>,
    }

    impl TemplateContext for Data {
        fn lookup(&self, path: &[String]) -> Option<Value<'_>> {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            match path.as_slice() {
                ["TrustDomain"] => Some(Value::Text("example.org".into())),
                ["PodMeta", "Namespace"] => Some(Value::Text("demo".into())),
                ["PodMeta", "Name"] => Some(Value::Text("web-0".into())),
                ["PodMeta", "Labels"] => Some(Value::Map(&self.labels)),
                ["PodMeta"] => Some(Value::Struct),
                ["PodSpec", "ServiceAccountName"] => Some(Value::Text("web".into())),
                _ => None,
            }
        }
    }

    fn data() -> Data {
        Data {
            labels: [("app", "web"), ("app.kubernetes.io/name", "shop")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    fn render(src: &str) -> Result<String, RenderError> {
        Template::parse(src).unwrap().render(&data())
    }

    #[test]
    fn renders_the_default_identity_template() {
        assert_eq!(
            render(
                "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"
            ),
            Ok("spiffe://example.org/ns/demo/sa/web".to_owned())
        );
    }

    #[test]
    fn spacing_and_trim_markers() {
        assert_eq!(render("a{{.PodMeta.Name}}b"), Ok("aweb-0b".to_owned()));
        assert_eq!(
            render("a  {{- .PodMeta.Name -}}  b"),
            Ok("aweb-0b".to_owned())
        );
        assert_eq!(render("a {{/* note */}}b"), Ok("a b".to_owned()));
        assert_eq!(render("plain"), Ok("plain".to_owned()));
        assert!(Template::parse("plain").is_ok_and(|t| t.is_literal()));
        // A `-` that is not followed by a space is part of the action, as in Go.
        assert!(Template::parse("{{-3}}").is_err());
    }

    #[test]
    fn map_access_by_dot_and_index() {
        assert_eq!(render("{{ .PodMeta.Labels.app }}"), Ok("web".to_owned()));
        assert_eq!(
            render(r#"k8s:pod-label:name:{{ index .PodMeta.Labels "app.kubernetes.io/name" }}"#),
            Ok("k8s:pod-label:name:shop".to_owned())
        );
        assert_eq!(
            render("{{ index .PodMeta.Labels `app` }}"),
            Ok("web".to_owned())
        );
    }

    #[test]
    fn render_errors_are_precise() {
        assert_eq!(
            render("{{ .PodMeta.Labels.missing }}"),
            Err(RenderError::MissingKey {
                path: "PodMeta.Labels".into(),
                key: "missing".into()
            })
        );
        assert_eq!(
            render(r#"{{ index .PodMeta.Labels "nope" }}"#),
            Err(RenderError::MissingKey {
                path: "PodMeta.Labels".into(),
                key: "nope".into()
            })
        );
        assert_eq!(
            render("{{ .PodMeta.Nmae }}"),
            Err(RenderError::UnknownField("PodMeta.Nmae".into()))
        );
        assert_eq!(
            render("{{ .PodMeta }}"),
            Err(RenderError::NotPrintable("PodMeta".into()))
        );
        assert_eq!(
            render("{{ .PodMeta.Labels }}"),
            Err(RenderError::NotPrintable("PodMeta.Labels".into()))
        );
        assert_eq!(
            render(r#"{{ index .PodMeta.Name "x" }}"#),
            Err(RenderError::NotAMap("PodMeta.Name".into()))
        );
        assert_eq!(
            render(r#"{{ index .PodMeta.Labels "app" "x" }}"#),
            Err(RenderError::NotAMap(r#"PodMeta.Labels["app"]"#.into()))
        );
    }

    #[test]
    fn hostile_templates_are_rejected_at_parse() {
        for (source, expected) in [
            ("{{ .A", TemplateError::Unclosed(0)),
            ("x{{ }}", TemplateError::EmptyAction(1)),
            ("{{/* open }}", TemplateError::BadComment(0)),
        ] {
            assert_eq!(Template::parse(source), Err(expected), "{source}");
        }
        for source in [
            "{{ .A | printf }}",
            "{{ printf \"%s\" .A }}",
            "{{ $x := .A }}",
            "{{ if .A }}x{{ end }}",
            "{{ . }}",
            "{{ .A..B }}",
            "{{ .A.1B }}",
            "{{ .A-b }}",
            "{{ index .A }}",
            "{{ index .A b }}",
            "{{ index .A \"b\"\"c\" }}",
            "{{ index .A \"unterminated }}",
            "{{ index .A \"bad\\q\" }}",
            "{{ indexx .A \"b\" }}",
        ] {
            assert!(Template::parse(source).is_err(), "{source} parsed");
        }
        assert_eq!(
            Template::parse(&"a".repeat(MAX_TEMPLATE_BYTES + 1)),
            Err(TemplateError::TooLong)
        );
    }

    #[test]
    fn output_is_bounded() {
        struct Big(String);
        impl TemplateContext for Big {
            fn lookup(&self, _: &[String]) -> Option<Value<'_>> {
                Some(Value::Text(self.0.as_str().into()))
            }
        }
        let template = Template::parse("{{ .A }}{{ .A }}").unwrap();
        let big = Big("x".repeat(MAX_RENDERED_BYTES / 2 + 1));
        assert_eq!(template.render(&big), Err(RenderError::TooLong));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_literals_round_trip(source in "\\PC{0,200}") {
            if let Ok(template) = Template::parse(&source)
                && !source.contains("{{")
            {
                proptest::prop_assert_eq!(template.render(&data()).ok(), Some(source.clone()));
            }
        }
    }
}
