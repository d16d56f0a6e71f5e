//! The module tree of a TorchScript archive, read without running
//! anything: each module object's class (torch's qualified name, its
//! `___torch_mangle_N` qualifier dropped), its parameters, and its
//! hyper-parameters, from the class's `Final` constants
//! (`torch.jit.script`, and ckpt's own exports) or from the one aten call
//! its traced `forward` makes (`torch.jit.trace`), with the operator
//! schema's defaults for the arguments a trace leaves out.

use std::collections::HashMap;
use std::rc::Rc;

use super::module::PickledModule;
use super::pickle::{Id, Obj, Unpickled};
use crate::{Dict, Key, Value};

/// The module tree at the root of `u`, the classes' sources read by
/// `source` (the text of `code/__torch__/a/b.py` for the qualifier
/// `__torch__.a.b`); `None` when the root is not a module object or the
/// tree is too large or deep to describe.
pub(crate) fn tree(
    u: &Unpickled,
    source: impl FnMut(&str) -> Option<String>,
) -> Option<PickledModule> {
    let mut walk = Walk {
        u,
        source,
        files: HashMap::new(),
        budget: u.arena.len().saturating_mul(8).saturating_add(1 << 16),
    };
    walk.node(u.root, 0)
}

struct Walk<'a, F> {
    u: &'a Unpickled,
    source: F,
    /// Parsed files by qualifier (`None`: missing or not text).
    files: HashMap<String, Option<HashMap<String, Rc<Class>>>>,
    /// Attribute entries that may still be scanned.
    budget: usize,
}

/// What a class's source says.
#[derive(Default)]
struct Class {
    /// `name : Final[type] = literal`.
    constants: Vec<(String, Value)>,
    /// `__parameters__`.
    parameters: Vec<String>,
    /// The body of `forward`.
    forward: Vec<String>,
}

impl<F: FnMut(&str) -> Option<String>> Walk<'_, F> {
    fn node(&mut self, id: Id, depth: usize) -> Option<PickledModule> {
        if depth > 128 {
            return None;
        }
        let u = self.u;
        let Obj::Object { class, state, .. } = &u.arena[id] else {
            return None;
        };
        let (qualifier, name) = (&class.0, &class.1);
        let attrs = match state.map(|s| &u.arena[s]) {
            Some(Obj::Dict(pairs)) => pairs.as_slice(),
            _ => &[],
        };
        self.budget = self.budget.checked_sub(attrs.len() + 1)?;
        let source = self.class(qualifier, name);
        let mut module = PickledModule {
            class: normalized(qualifier, name),
            is_module: true,
            ..Default::default()
        };
        let mut tensors = Vec::new();
        for &(k, v) in attrs {
            let Obj::Str(key) = &u.arena[k] else { continue };
            match &u.arena[v] {
                Obj::Tensor(t) => tensors.push((key.as_str(), t.shape.clone())),
                Obj::Object { .. } => {
                    let child = self.node(v, depth + 1)?;
                    module.children.push((key.clone(), child));
                }
                _ => {}
            }
        }
        let Some(source) = source else {
            module.foreign_forward = true;
            return Some(module);
        };
        module.parameters = tensors
            .iter()
            .filter(|(k, _)| source.parameters.iter().any(|p| p == k))
            .map(|(k, _)| (*k).to_owned())
            .collect();
        if source.constants.is_empty() {
            match traced(&module.class, &source.forward, &tensors) {
                Some(attributes) => module.attributes = attributes,
                None => module.foreign_forward = !is_container(&module.class),
            }
        } else {
            for (k, v) in &source.constants {
                module.attributes.insert(Key::Str(k.clone()), v.clone());
            }
        }
        Some(module)
    }

    /// The source of class `name` in the file of `qualifier`.
    fn class(&mut self, qualifier: &str, name: &str) -> Option<Rc<Class>> {
        if !self.files.contains_key(qualifier) {
            let parsed = (self.source)(qualifier).map(|text| parse_file(&text));
            self.files.insert(qualifier.to_owned(), parsed);
        }
        self.files.get(qualifier)?.as_ref()?.get(name).cloned()
    }
}

/// Containers run their children: their forward is no one operator.
fn is_container(class: &str) -> bool {
    class == "torch.nn.modules.container.Sequential" || class == "ckpt.modules.Residual"
}

/// torch's class name without `__torch__.` and mangling
/// (`torch.nn.modules.linear.Linear`); a class outside `torch.nn` keeps
/// its full TorchScript name (`__torch__.Residual`).
fn normalized(qualifier: &str, name: &str) -> String {
    let parts: Vec<&str> = qualifier
        .split('.')
        .filter(|p| !p.starts_with("___torch_mangle_"))
        .collect();
    let full = format!("{}.{name}", parts.join("."));
    match full.strip_prefix("__torch__.") {
        Some(torch) if torch.starts_with("torch.nn.modules.") => torch.to_owned(),
        Some(ckpt) if ckpt.starts_with("ckpt.modules.") => ckpt.to_owned(),
        _ => full,
    }
}

/// The classes of one source file, by name.
fn parse_file(text: &str) -> HashMap<String, Rc<Class>> {
    let mut classes = HashMap::new();
    let mut current: Option<(String, Class)> = None;
    let (mut in_forward, mut in_signature) = (false, false);
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim();
        if indent == 0 {
            if let Some((name, class)) = current.take() {
                classes.insert(name, Rc::new(class));
            }
            in_forward = false;
            if let Some(rest) = body.strip_prefix("class ") {
                let name = rest.split(['(', ':']).next().unwrap_or("").trim();
                current = Some((name.to_owned(), Class::default()));
            }
            continue;
        }
        let Some((_, class)) = current.as_mut() else {
            continue;
        };
        if indent == 2 {
            in_forward = body.starts_with("def forward(");
            // The signature may go on over lines up to its closing `:`.
            in_signature = in_forward && !body.ends_with(':');
            declaration(body, class);
        } else if in_signature {
            in_signature = !body.ends_with(':');
        } else if in_forward && indent >= 4 {
            class.forward.push(body.to_owned());
        }
    }
    if let Some((name, class)) = current {
        classes.insert(name, Rc::new(class));
    }
    classes
}

/// A class-level line: `__parameters__ = [...]` or a `Final` constant.
fn declaration(body: &str, class: &mut Class) {
    if let Some(list) = body.strip_prefix("__parameters__ = ") {
        if let Some(Value::List(items)) = Literal::parse(list) {
            class.parameters = items
                .into_iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s),
                    _ => None,
                })
                .collect();
        }
        return;
    }
    let Some((name, rest)) = body.split_once(" : Final[") else {
        return;
    };
    let Some((_, literal)) = rest.split_once("] = ") else {
        return;
    };
    if let Some(value) = Literal::parse(literal) {
        class.constants.push((name.trim().to_owned(), value));
    }
}

/// A TorchScript literal: numbers, `True`/`False`/`None`, strings, and
/// lists and tuples of them (as values; tuples as `Value::Tuple`).
struct Literal<'a> {
    rest: &'a str,
}

impl Literal<'_> {
    /// The whole of `text` as one literal.
    fn parse(text: &str) -> Option<Value> {
        let mut l = Literal { rest: text.trim() };
        let v = l.value(0)?;
        l.rest.trim().is_empty().then_some(v)
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        self.rest = self.rest.trim_start();
        let first = self.rest.chars().next()?;
        match first {
            '[' | '(' => self.sequence(first, depth),
            '"' | '\'' => self.string(first),
            _ => self.atom(),
        }
    }

    fn sequence(&mut self, open: char, depth: usize) -> Option<Value> {
        if depth > 4 {
            return None;
        }
        let close = if open == '[' { ']' } else { ')' };
        self.rest = &self.rest[1..];
        let mut items = Vec::new();
        loop {
            self.rest = self.rest.trim_start();
            if let Some(rest) = self.rest.strip_prefix(close) {
                self.rest = rest;
                break;
            }
            items.push(self.value(depth + 1)?);
            self.rest = self.rest.trim_start();
            if let Some(rest) = self.rest.strip_prefix(',') {
                self.rest = rest;
            } else if !self.rest.starts_with(close) {
                return None;
            }
        }
        Some(match open {
            '[' => Value::List(items),
            _ => Value::Tuple(items),
        })
    }

    fn string(&mut self, quote: char) -> Option<Value> {
        let end = self.rest[1..].find(quote)? + 1;
        let s = &self.rest[1..end];
        if s.contains('\\') {
            return None;
        }
        self.rest = &self.rest[end + 1..];
        Some(Value::Str(s.to_owned()))
    }

    fn atom(&mut self) -> Option<Value> {
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_.+-".contains(c)))
            .unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        match word {
            "True" => Some(Value::Bool(true)),
            "False" => Some(Value::Bool(false)),
            "None" => Some(Value::None),
            _ if word.contains(['.', 'e', 'E']) && !word.starts_with(['e', 'E']) => {
                word.parse().ok().map(Value::Float)
            }
            _ => word.parse().ok().map(Value::Int),
        }
    }
}

/// An argument of a traced aten call: a literal, or anything else (a
/// local such as `weight`).
#[derive(Clone)]
enum Arg {
    Literal(Value),
    Other,
}

/// An operator's arguments: each name, and the default a trace leaves
/// out (as a literal) when it has one.
type Schema = &'static [(&'static str, Option<&'static str>)];

/// A call's arguments: `name=` ones by name.
type Args = Vec<(Option<String>, Arg)>;

/// The operators a traced `torch.nn` module calls, and their schemas.
const SCHEMAS: &[(&str, Schema)] = &[
    (
        "linear",
        &[("input", None), ("weight", None), ("bias", Some("None"))],
    ),
    (
        "_convolution",
        &[
            ("input", None),
            ("weight", None),
            ("bias", None),
            ("stride", None),
            ("padding", None),
            ("dilation", None),
            ("transposed", None),
            ("output_padding", None),
            ("groups", None),
        ],
    ),
    (
        "batch_norm",
        &[
            ("input", None),
            ("weight", None),
            ("bias", None),
            ("running_mean", None),
            ("running_var", None),
            ("training", None),
            ("momentum", None),
            ("eps", None),
        ],
    ),
    (
        "layer_norm",
        &[
            ("input", None),
            ("normalized_shape", None),
            ("weight", Some("None")),
            ("bias", Some("None")),
            ("eps", Some("1e-05")),
        ],
    ),
    (
        "embedding",
        &[
            ("weight", None),
            ("indices", None),
            ("padding_idx", Some("-1")),
        ],
    ),
    ("relu", &[("input", None)]),
    (
        "gelu",
        &[("input", None), ("approximate", Some("\"none\""))],
    ),
    ("silu", &[("input", None)]),
    ("sigmoid", &[("input", None)]),
    ("tanh", &[("input", None)]),
    (
        "softmax",
        &[("input", None), ("dim", None), ("dtype", Some("None"))],
    ),
    ("dropout", &[("input", None), ("p", None), ("train", None)]),
    (
        "flatten",
        &[
            ("input", None),
            ("start_dim", Some("0")),
            ("end_dim", Some("-1")),
        ],
    ),
    (
        "max_pool2d",
        &[
            ("input", None),
            ("kernel_size", None),
            ("stride", Some("[]")),
            ("padding", Some("[0, 0]")),
            ("dilation", Some("[1, 1]")),
            ("ceil_mode", Some("False")),
        ],
    ),
    (
        "avg_pool2d",
        &[
            ("input", None),
            ("kernel_size", None),
            ("stride", Some("[]")),
            ("padding", Some("[0, 0]")),
            ("ceil_mode", Some("False")),
            ("count_include_pad", Some("True")),
            ("divisor_override", Some("None")),
        ],
    ),
    (
        "adaptive_avg_pool2d",
        &[("input", None), ("output_size", None)],
    ),
];

/// The `torch.nn` attributes of a traced module, from the one aten call
/// its `forward` makes and its tensors' shapes; `None` when the forward
/// makes another call, or more than one.
fn traced(class: &str, forward: &[String], tensors: &[(&str, Vec<u64>)]) -> Option<Dict> {
    let (op, args) = only_call(forward)?;
    let (_, schema) = SCHEMAS.iter().find(|(name, _)| *name == op)?;
    let bound = bind(schema, &args)?;
    let lit = |name: &str| match bound.get(name) {
        Some(Arg::Literal(v)) => Some(v.clone()),
        _ => None,
    };
    let shape = |name: &str| {
        tensors
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, s)| s.clone())
    };
    let int = |v: u64| Value::Int(v as i64);
    let given = |name: &str| !matches!(bound.get(name), Some(Arg::Literal(Value::None)) | None);
    let mut a = Dict::new();
    let mut set = |k: &str, v: Value| {
        a.insert(Key::Str(k.to_owned()), v);
    };
    let kind = class.strip_prefix("torch.nn.modules.")?;
    match (kind, op.as_str()) {
        ("linear.Linear", "linear") => {
            let w = shape("weight").filter(|w| w.len() == 2)?;
            set("in_features", int(w[1]));
            set("out_features", int(w[0]));
        }
        ("conv.Conv2d", "_convolution") => {
            let w = shape("weight").filter(|w| w.len() == 4)?;
            let groups = match lit("groups")? {
                Value::Int(g) if g > 0 => g as u64,
                _ => return None,
            };
            if lit("transposed")? != Value::Bool(false) {
                return None;
            }
            set("in_channels", int(w[1].checked_mul(groups)?));
            set("out_channels", int(w[0]));
            set("kernel_size", Value::Tuple(vec![int(w[2]), int(w[3])]));
            for k in ["stride", "padding", "dilation"] {
                set(k, lit(k)?);
            }
            set("groups", int(groups));
            set("padding_mode", Value::Str("zeros".into()));
        }
        ("batchnorm.BatchNorm1d" | "batchnorm.BatchNorm2d", "batch_norm") => {
            let n = shape("running_mean")
                .or_else(|| shape("weight"))
                .filter(|s| s.len() == 1)?;
            set("num_features", int(n[0]));
            set("eps", lit("eps")?);
            set("momentum", lit("momentum")?);
            set("affine", Value::Bool(given("weight")));
            set("track_running_stats", Value::Bool(given("running_mean")));
        }
        ("normalization.LayerNorm", "layer_norm") => {
            set("normalized_shape", lit("normalized_shape")?);
            set("eps", lit("eps")?);
            set("elementwise_affine", Value::Bool(given("weight")));
        }
        ("sparse.Embedding", "embedding") => {
            let w = shape("weight").filter(|w| w.len() == 2)?;
            set("num_embeddings", int(w[0]));
            set("embedding_dim", int(w[1]));
            set("max_norm", Value::None);
        }
        ("activation.ReLU", "relu")
        | ("activation.SiLU", "silu")
        | ("activation.Sigmoid", "sigmoid")
        | ("activation.Tanh", "tanh") => {}
        ("activation.GELU", "gelu") => set("approximate", lit("approximate")?),
        ("activation.Softmax", "softmax") => set("dim", lit("dim")?),
        ("dropout.Dropout", "dropout") => set("p", lit("p")?),
        ("flatten.Flatten", "flatten") => {
            set("start_dim", lit("start_dim")?);
            set("end_dim", lit("end_dim")?);
        }
        ("pooling.MaxPool2d" | "pooling.AvgPool2d", "max_pool2d" | "avg_pool2d") => {
            let kernel = lit("kernel_size")?;
            let stride = match lit("stride")? {
                Value::List(items) if items.is_empty() => kernel.clone(),
                other => other,
            };
            set("kernel_size", kernel);
            set("stride", stride);
            set("padding", lit("padding")?);
            set("ceil_mode", lit("ceil_mode")?);
            if op == "max_pool2d" {
                set("dilation", lit("dilation")?);
            } else {
                set("count_include_pad", lit("count_include_pad")?);
                set("divisor_override", lit("divisor_override")?);
            }
        }
        ("pooling.AdaptiveAvgPool2d", "adaptive_avg_pool2d") => {
            set("output_size", lit("output_size")?)
        }
        _ => return None,
    }
    Some(a)
}

/// The one `torch.OP(...)` call in a forward body: its operator and
/// arguments (`name=value` ones by name).
fn only_call(forward: &[String]) -> Option<(String, Args)> {
    let mut found = None;
    for line in forward {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("torch.") {
            let after = &rest[at + "torch.".len()..];
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let (op, tail) = after.split_at(name_len);
            rest = tail;
            let Some(args) = tail.strip_prefix('(') else {
                continue;
            };
            if found.is_some() {
                return None;
            }
            found = Some((op.to_owned(), arguments(args)?));
        }
    }
    found
}

/// The arguments up to the call's closing parenthesis.
fn arguments(text: &str) -> Option<Args> {
    let mut args = Vec::new();
    let (mut depth, mut start, mut quoted) = (0usize, 0usize, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' | '[' => depth += 1,
            ')' if depth == 0 => {
                let last = text[start..i].trim();
                if !last.is_empty() {
                    args.push(argument(last));
                }
                return Some(args);
            }
            ')' | ']' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                args.push(argument(text[start..i].trim()));
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

fn argument(text: &str) -> (Option<String>, Arg) {
    let (name, value) = match text.split_once('=') {
        Some((n, v))
            if n.trim()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            (Some(n.trim().to_owned()), v)
        }
        _ => (None, text),
    };
    let arg = Literal::parse(value).map_or(Arg::Other, Arg::Literal);
    (name, arg)
}

/// The call's arguments by the schema's names, defaults filled in;
/// positional arguments past the schema's (cudnn flags) are ignored.
fn bind(schema: Schema, args: &[(Option<String>, Arg)]) -> Option<HashMap<&'static str, Arg>> {
    let mut bound = HashMap::new();
    let mut positional = 0;
    for (name, arg) in args {
        let key = match name {
            Some(n) => schema.iter().find(|(s, _)| s == n)?.0,
            None => {
                positional += 1;
                match schema.get(positional - 1) {
                    Some((s, _)) => *s,
                    None => continue,
                }
            }
        };
        bound.insert(key, arg.clone());
    }
    for (name, default) in schema {
        if !bound.contains_key(name) {
            bound.insert(*name, Arg::Literal(Literal::parse((*default)?)?));
        }
    }
    Some(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_read_as_torch_writes_them() {
        let cases = [
            ("(3, 2)", Value::Tuple(vec![Value::Int(3), Value::Int(2)])),
            ("(5,)", Value::Tuple(vec![Value::Int(5)])),
            ("[]", Value::List(vec![])),
            ("2.", Value::Float(2.0)),
            ("1.0000000000000001e-05", Value::Float(1e-5)),
            ("-1", Value::Int(-1)),
            ("\"tanh\"", Value::Str("tanh".into())),
            ("None", Value::None),
            ("False", Value::Bool(false)),
        ];
        for (text, want) in cases {
            assert_eq!(Literal::parse(text), Some(want), "{text}");
        }
        for bad in [
            "(1, 2",
            "[[[[[[1]]]]]]",
            "x + 1",
            "\"a\\\"b\"",
            "1 2",
            "e5",
            "",
        ] {
            assert_eq!(Literal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_traced_forward_binds_its_call_with_the_schemas_defaults() {
        let forward = vec!["return torch.max_pool2d(input, [3, 3], [2, 2], [1, 1], [1, 1])".into()];
        let a = traced("torch.nn.modules.pooling.MaxPool2d", &forward, &[]).unwrap();
        assert_eq!(a.get(&Key::from("ceil_mode")), Some(&Value::Bool(false)));
        assert_eq!(
            a.get(&Key::from("padding")),
            Some(&Value::List(vec![Value::Int(1), Value::Int(1)]))
        );
        // Two calls, another operator, an unclosed call: not torch's forward.
        let two = vec![
            "x = torch.constant_pad_nd(input, [1, 1])".into(),
            "return torch.max_pool2d(x, [3, 3])".into(),
        ];
        assert!(traced("torch.nn.modules.pooling.MaxPool2d", &two, &[]).is_none());
        let other = vec!["return torch.relu(input)".into()];
        assert!(traced("torch.nn.modules.activation.Tanh", &other, &[]).is_none());
        let open = vec!["return torch.gelu(input, approximate=\"tanh\"".into()];
        assert!(traced("torch.nn.modules.activation.GELU", &open, &[]).is_none());
    }

    #[test]
    fn files_parse_into_classes_whatever_their_text() {
        let text = "class Linear(Module):\n  __parameters__ = [\"weight\", ]\n  in_features : Final[int] = 4\n  \
                    def forward(self: X,\n    input: Tensor) -> Tensor:\n    return torch.linear(input, self.weight)\n\
                    class Odd:\n  : Final[ = \n  def forward(\n\u{7f}\u{ff}\n";
        let classes = parse_file(text);
        let linear = &classes["Linear"];
        assert_eq!(linear.parameters, ["weight"]);
        assert_eq!(
            linear.constants,
            [("in_features".to_owned(), Value::Int(4))]
        );
        assert_eq!(linear.forward.len(), 1);
        assert!(classes["Odd"].constants.is_empty());
        assert_eq!(
            normalized(
                "__torch__.torch.nn.modules.linear.___torch_mangle_3",
                "Linear"
            ),
            "torch.nn.modules.linear.Linear"
        );
        assert_eq!(normalized("__torch__", "Residual"), "__torch__.Residual");
    }
}
