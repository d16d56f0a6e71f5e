//! A TorchScript source file read as text: its classes, each with its
//! `Final` constants, `__parameters__`, forward hooks, and what its
//! `forward` does (`Body`), parsed once.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::Value;

/// What a class's source says.
#[derive(Default)]
pub(super) struct Class {
    /// `name : Final[type] = literal`.
    pub constants: Vec<(String, Value)>,
    /// `__parameters__`.
    pub parameters: HashSet<String>,
    /// `__forward_hooks__` or `__forward_pre_hooks__` name any.
    pub hooks: bool,
    /// What `forward` does.
    pub body: Body,
    /// The lines of `forward` while the file is read.
    forward: Vec<String>,
}

impl Class {
    /// What a visit of an object of this class copies.
    pub fn cost(&self) -> usize {
        let args = match &self.body {
            Body::Call { args, .. } => args.len(),
            _ => 0,
        };
        self.constants.len() + args
    }
}

/// What a `forward` does, as far as deriving a spec cares.
#[derive(Default)]
pub(super) enum Body {
    /// No operator or function call (only children's forwards and
    /// attribute reads): a container's.
    #[default]
    Plain,
    /// Locals read from `self` (`weight = self.weight`), then one aten
    /// call, whose value is returned.
    Call {
        /// The operator (`linear`).
        op: String,
        /// Its arguments.
        args: Args,
        /// Local name to the attribute of `self` it holds.
        locals: HashMap<String, String>,
    },
    /// `input + ` its children's forwards in turn, as ckpt writes a
    /// residual block.
    Residual,
    /// Anything else.
    Other,
}

/// An argument of an aten call: a literal, a local's name, or anything
/// else.
#[derive(Clone)]
pub(super) enum Arg {
    Literal(Value),
    Name(String),
    Other,
}

/// A call's arguments: `name=` ones by name.
pub(super) type Args = Vec<(Option<String>, Arg)>;

/// The classes of one source file, by name.
pub(super) fn parse_file(text: &str) -> HashMap<String, Rc<Class>> {
    let mut classes = HashMap::new();
    let mut current: Option<(String, Class)> = None;
    let (mut in_forward, mut in_signature) = (false, false);
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim();
        if indent == 0 {
            if let Some((name, class)) = current.take() {
                classes.insert(name, Rc::new(finished(class)));
            }
            (in_forward, in_signature) = (false, false);
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
        classes.insert(name, Rc::new(finished(class)));
    }
    classes
}

/// A class with its forward read into a [`Body`].
fn finished(mut class: Class) -> Class {
    class.body = body(&std::mem::take(&mut class.forward));
    class
}

/// A class-level line: `__parameters__`, the hook lists, or a `Final`
/// constant.
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
    for hooks in ["__forward_hooks__ = ", "__forward_pre_hooks__ = "] {
        if let Some(list) = body.strip_prefix(hooks) {
            class.hooks |= !matches!(Literal::parse(list), Some(Value::List(l)) if l.is_empty());
            return;
        }
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

/// What the lines of a `forward` do: nothing but children's forwards and
/// attribute reads; or locals read from `self`, one `torch.OP(...)` and
/// its value returned; or anything else.
fn body(lines: &[String]) -> Body {
    let calls = |l: &String| l.contains("torch.") || l.contains("ops.");
    if !lines.iter().any(calls) {
        return Body::Plain;
    }
    if residual(lines) {
        return Body::Residual;
    }
    let mut locals = HashMap::new();
    let mut call: Option<(String, Args)> = None;
    let mut result = None;
    for line in lines {
        let (target, expr) = match line.strip_prefix("return ") {
            Some(expr) => (None, expr.trim()),
            None => match line.split_once(" = ") {
                Some((name, expr)) if identifier(name) => (Some(name), expr.trim()),
                _ => return Body::Other,
            },
        };
        if let Some(attr) = expr.strip_prefix("self.").filter(|a| identifier(a)) {
            match target {
                Some(name) => locals.insert(name.to_owned(), attr.to_owned()),
                None => return Body::Other,
            };
        } else if let Some(found) = aten_call(expr) {
            if call.replace(found).is_some() {
                return Body::Other;
            }
            result = target.map(str::to_owned);
            if target.is_none() {
                return finish(call, locals);
            }
        } else if target.is_none() && result.as_deref() == Some(expr) {
            return finish(call, locals);
        } else {
            return Body::Other;
        }
    }
    Body::Other
}

/// The forward of ckpt's residual block: `x = input`, each child's
/// forward of `x` into `x`, `return torch.add(input, x)`.
fn residual(lines: &[String]) -> bool {
    let [first, children @ .., last] = lines else {
        return false;
    };
    first == "x = input"
        && last == "return torch.add(input, x)"
        && children.iter().all(|l| {
            l.strip_prefix("x = (getattr(self, \"")
                .and_then(|rest| rest.strip_suffix("\")).forward(x, )"))
                .is_some_and(identifier_or_index)
        })
}

/// A child's attribute name: an identifier or an index.
fn identifier_or_index(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn finish(call: Option<(String, Args)>, locals: HashMap<String, String>) -> Body {
    match call {
        Some((op, args)) => Body::Call { op, args, locals },
        None => Body::Other,
    }
}

/// `torch.OP(args)`, the whole of `expr`.
fn aten_call(expr: &str) -> Option<(String, Args)> {
    let rest = expr.strip_prefix("torch.")?;
    let (op, args) = rest.split_once('(')?;
    if !identifier(op) {
        return None;
    }
    let (args, tail) = arguments(args)?;
    tail.trim().is_empty().then(|| (op.to_owned(), args))
}

/// The arguments up to the call's closing parenthesis, and what follows.
fn arguments(text: &str) -> Option<(Args, &str)> {
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
                return Some((args, &text[i + 1..]));
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
        Some((n, v)) if identifier(n.trim()) => (Some(n.trim().to_owned()), v.trim()),
        _ => (None, text),
    };
    let arg = match Literal::parse(value) {
        Some(v) => Arg::Literal(v),
        None if identifier(value) => Arg::Name(value.to_owned()),
        None => Arg::Other,
    };
    (name, arg)
}

fn identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A TorchScript literal: numbers, `True`/`False`/`None`, strings, and
/// lists and tuples of them (as values; tuples as `Value::Tuple`).
pub(super) struct Literal<'a> {
    rest: &'a str,
}

impl Literal<'_> {
    /// The whole of `text` as one literal.
    pub fn parse(text: &str) -> Option<Value> {
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
    fn files_parse_into_classes_whatever_their_text() {
        let text = "class Linear(Module):\n  __parameters__ = [\"weight\", ]\n  __forward_hooks__ = [\"h\"]\n  \
                    in_features : Final[int] = 4\n  def forward(self: X,\n    input: Tensor) -> Tensor:\n    \
                    weight = self.weight\n    return torch.linear(input, weight)\n\
                    class Odd:\n  : Final[ = \n  def forward(\n\u{7f}\u{ff}\n";
        let classes = parse_file(text);
        let linear = &classes["Linear"];
        assert!(linear.parameters.contains("weight") && linear.hooks);
        assert_eq!(
            linear.constants,
            [("in_features".to_owned(), Value::Int(4))]
        );
        assert!(
            matches!(&linear.body, Body::Call { op, locals, .. } if op == "linear" && locals["weight"] == "weight")
        );
        assert!(classes["Odd"].constants.is_empty());
        let sequential =
            "class S(Module):\n  def forward(self: X,\n    input: Tensor) -> Tensor:\n    \
                          _0 = getattr(self, \"0\")\n    return (_0).forward(input, )\n";
        assert!(matches!(parse_file(sequential)["S"].body, Body::Plain));
    }
}
