//! What the globals a stream names resolve to: a dangerous one is refused
//! where it is named (reached or not), `torch`'s dtypes become dtypes,
//! every other global stays a name ([`Obj::Global`]) for `REDUCE` and
//! `NEWOBJ` to look at; and what a persistent id names (a storage of the
//! archive, by its class).

use super::machine::Machine;
use super::{Id, Obj, StorageRef};
use crate::format::pytorch::{safety, storage_dtype};
use crate::{DType, Error, Result};

impl Machine<'_> {
    /// `GLOBAL`: module and name as two text lines.
    pub(super) fn text_global(&mut self) -> Result<()> {
        let module = self.line()?;
        let name = self.line()?;
        let global = self.global(module, name)?;
        self.push(global);
        Ok(())
    }

    /// `STACK_GLOBAL`: module and name as two strings on the stack.
    pub(super) fn stack_global(&mut self) -> Result<()> {
        let name = self.pop()?;
        let module = self.pop()?;
        match (&self.arena[module], &self.arena[name]) {
            (Obj::Str(m), Obj::Str(n)) => {
                let global = self.global(m.clone(), n.clone())?;
                self.push(global);
                Ok(())
            }
            _ => Err(self.err("STACK_GLOBAL needs two strings")),
        }
    }

    /// The module and name of global `id`; `None` when it is no global.
    pub(super) fn global_name(&self, id: Id) -> Option<(&str, &str)> {
        match &self.arena[id] {
            Obj::Global(g) => Some((&g.0, &g.1)),
            _ => None,
        }
    }

    /// The error that refuses what `id` names (a class ckpt does not read).
    fn refuse(&self, id: Id) -> Error {
        let global = match self.global_name(id) {
            Some((m, n)) => format!("{m}.{n}"),
            None => "a non-global value".to_owned(),
        };
        Error::RefusedGlobal {
            path: self.path.to_owned(),
            entry: self.entry.to_owned(),
            global,
        }
    }

    /// A global as the stream names it: refused when dangerous (wherever
    /// it is, reached or not), recorded, and kept as a name (a dtype such
    /// as `torch.float32` becomes its value).
    fn global(&mut self, module: String, name: String) -> Result<Obj> {
        if safety::is_dangerous(&module, &name) {
            return Err(Error::DangerousGlobal {
                path: self.path.to_owned(),
                entry: self.entry.to_owned(),
                offset: self.op_start as u64,
                global: format!("{module}.{name}"),
            });
        }
        self.charge(2 * (module.len() + name.len()))?;
        self.globals.insert(format!("{module}.{name}"));
        let module = safety::python3_module(&module).to_owned();
        Ok(match DType::from_torch(&name) {
            Some(dtype) if module == "torch" => Obj::Dtype(dtype),
            _ => Obj::Global(Box::new((module, name))),
        })
    }

    /// `('storage', <storage class>, key, location, numel[, view])`.
    pub(super) fn persistent_id(&self, pid: Id) -> Result<StorageRef> {
        let parts = self
            .tuple(pid)
            .map_err(|_| self.err("a persistent id is not a tuple"))?;
        let [tag, class, key, _location, numel, ref view @ ..] = parts[..] else {
            return Err(self.err("a persistent id has fewer than 5 parts"));
        };
        // Very old legacy files name views of a root storage here; ckpt
        // refuses them rather than read the wrong bytes.
        if view.iter().any(|&v| !matches!(self.arena[v], Obj::None)) {
            return Err(self.err("a storage view (pre-1.0 legacy format) is not supported"));
        }
        if self.as_str(tag)? != "storage" {
            return Err(self.err("a persistent id is not a storage"));
        }
        let dtype = match self.global_name(class) {
            Some(("torch.storage", "UntypedStorage")) => None,
            Some(("torch", name)) => Some(storage_dtype(name).ok_or_else(|| self.refuse(class))?),
            _ => return Err(self.refuse(class)),
        };
        let key = match &self.arena[key] {
            Obj::Str(s) => {
                self.charge(s.len())?;
                s.clone()
            }
            Obj::Int(i) => i.to_string(),
            _ => return Err(self.err("a storage key is not a string")),
        };
        let numel = u64::try_from(self.as_int(numel)?)
            .map_err(|_| self.err("a storage length is negative"))?;
        Ok(StorageRef { key, dtype, numel })
    }
}
