//! What `REDUCE` builds: the globals ckpt understands become plain data
//! (tensors, dicts, lists, strings, numbers); any other class becomes an
//! inert object that is never constructed. Dangerous globals never get
//! here: naming one is refused when the stream names it.

use super::machine::Machine;
use super::{Id, Obj, QScheme, TensorRef, MAX_WRAPPERS};
use crate::{DType, Result};

/// What a call builds: a new object, or one of its arguments itself.
enum Built {
    /// A new object, put in the arena.
    New(Obj),
    /// An argument, returned as it is.
    Arg(Id),
}

use Built::{Arg, New};

impl Machine<'_> {
    /// `callable(*args)` as data.
    pub(super) fn reduce(&mut self, mut callable: Id, mut args: Id) -> Result<Id> {
        // `_rebuild_from_type_v2(func, type, args, state)` calls `func(*args)`;
        // unwrap such wrappers in a loop, not by recursion.
        for _ in 0..MAX_WRAPPERS {
            if self.global_name(callable) != Some(("torch._tensor", "_rebuild_from_type_v2")) {
                break;
            }
            let [func, _new_type, inner_args, ..] = self.tuple(args)?[..] else {
                return Err(self.err("_rebuild_from_type_v2 with too few arguments"));
            };
            (callable, args) = (func, inner_args);
        }
        let Some((module, name)) = self.global_name(callable) else {
            return Err(self.err("REDUCE of something that is not a global"));
        };
        // Every copy of a memoised name costs its bytes.
        self.charge(module.len() + name.len())?;
        let (module, name) = (module.to_owned(), name.to_owned());
        Ok(match self.call_of(module, name, args)? {
            New(obj) => self.alloc(obj),
            Arg(id) => id,
        })
    }

    /// What `module.name(*args)` builds, by the global called.
    fn call_of(&mut self, module: String, name: String, args_id: Id) -> Result<Built> {
        let args = self.tuple(args_id)?;
        Ok(match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") => New(self.ordered_dict(&args)?),
            // `defaultdict(factory)`; its items follow as SETITEMS.
            ("collections", "defaultdict") => New(Obj::Dict(Vec::new())),
            // `Counter(dict)`, as in MultiStepLR's state: read as the dict.
            ("collections", "Counter") => self.counter(&args)?,
            ("collections", "deque") => New(Obj::List(self.sequence(args.first().copied())?)),
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                New(Obj::Tensor(Box::new(self.rebuild_tensor(&args, None)?)))
            }
            ("torch._utils", "_rebuild_tensor_v3") => New(self.rebuild_tensor_v3(&args)?),
            ("torch._utils", "_rebuild_qtensor") => New(self.rebuild_qtensor(&args)?),
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => Arg(self.parameter(&args)?),
            // TorchScript's typed lists and type tags: the value itself.
            (
                "torch.jit._pickle",
                "build_intlist" | "build_tensorlist" | "build_doublelist" | "build_boollist"
                | "restore_type_tag",
            ) => Arg(args
                .first()
                .copied()
                .ok_or_else(|| self.err("a TorchScript list builder without a value"))?),
            ("torch", "Size") => New(Obj::Tuple(self.sequence(args.first().copied())?)),
            ("builtins", "set" | "frozenset") => {
                New(Obj::List(self.sequence(args.first().copied())?))
            }
            ("torch", "device") => New(self.device(&args)?),
            ("_codecs", "encode") => New(self.encode(&args)?),
            ("builtins", "bytearray") => New(self.bytearray(&args)?),
            ("copyreg", "_reconstructor") => New(self.reconstructor(&args)?),
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                New(Obj::NdArray { state: None })
            }
            // Protocol 5's arrays: `_frombuffer(buffer, dtype, shape, order)`.
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => {
                New(self.frombuffer(&args, module, name, args_id))
            }
            ("numpy", "dtype") => New(self.np_dtype(&args)?),
            ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => {
                New(match self.np_scalar(&args)? {
                    Some(obj) => obj,
                    None => self.object(module, name, args_id),
                })
            }
            (
                "pathlib",
                "Path" | "PosixPath" | "WindowsPath" | "PurePosixPath" | "PureWindowsPath",
            ) => New(Obj::Str(self.path_parts(&args)?)),
            ("datetime", "datetime" | "date") if args.len() == 1 => {
                New(match self.date(args[0])? {
                    Some(text) => Obj::Str(text),
                    None => self.object(module, name, args_id),
                })
            }
            // Anything else is a class (or a function) whose call ckpt
            // records and never makes.
            _ => New(self.object(module, name, args_id)),
        })
    }

    /// `Counter()`, or `Counter(dict)` read as the dict itself.
    fn counter(&self, args: &[Id]) -> Result<Built> {
        match args[..] {
            [] => Ok(New(Obj::Dict(Vec::new()))),
            [dict] if matches!(self.arena[dict], Obj::Dict(_)) => Ok(Arg(dict)),
            _ => Err(self.err("Counter built from something other than a dict")),
        }
    }

    /// `_rebuild_tensor_v3`: `_rebuild_tensor_v2`'s arguments and a dtype.
    fn rebuild_tensor_v3(&self, args: &[Id]) -> Result<Obj> {
        let dtype = match args.get(6).map(|&d| &self.arena[d]) {
            Some(Obj::Dtype(d)) => *d,
            _ => return Err(self.err("_rebuild_tensor_v3 without a dtype")),
        };
        Ok(Obj::Tensor(Box::new(
            self.rebuild_tensor(args, Some(dtype))?,
        )))
    }

    /// `_rebuild_parameter(tensor, ...)`: the tensor itself.
    fn parameter(&self, args: &[Id]) -> Result<Id> {
        let tensor = *args
            .first()
            .ok_or_else(|| self.err("_rebuild_parameter without a tensor"))?;
        if !matches!(self.arena[tensor], Obj::Tensor(_)) {
            return Err(self.err("_rebuild_parameter of something that is not a tensor"));
        }
        Ok(tensor)
    }

    /// `bytearray(bytes)` as the bytes.
    fn bytearray(&self, args: &[Id]) -> Result<Obj> {
        match args.first().map(|&a| &self.arena[a]) {
            Some(Obj::Bytes(b)) => {
                self.charge(b.len())?;
                Ok(Obj::Bytes(b.clone()))
            }
            None => Ok(Obj::Bytes(Vec::new())),
            _ => Err(self.err("bytearray of something that is not bytes")),
        }
    }

    /// `copyreg._reconstructor(class, base, state)`: an instance of the
    /// class, never constructed.
    fn reconstructor(&self, args: &[Id]) -> Result<Obj> {
        let class = *args
            .first()
            .ok_or_else(|| self.err("_reconstructor without a class"))?;
        let (m, n) = self
            .global_name(class)
            .ok_or_else(|| self.err("_reconstructor of something that is not a class"))?;
        self.charge(m.len() + n.len())?;
        Ok(Obj::Object {
            class: Box::new((m.to_owned(), n.to_owned())),
            args: None,
            state: None,
        })
    }

    /// `numpy.dtype(code)`.
    fn np_dtype(&self, args: &[Id]) -> Result<Obj> {
        let code = self.as_str(
            *args
                .first()
                .ok_or_else(|| self.err("numpy.dtype without a type code"))?,
        )?;
        self.charge(code.len())?;
        Ok(Obj::NpDtype {
            code: code.to_owned(),
            big_endian: false,
        })
    }

    fn object(&self, module: String, name: String, args: Id) -> Obj {
        Obj::Object {
            class: Box::new((module, name)),
            args: Some(args),
            state: None,
        }
    }

    /// `OrderedDict()` or, as torch 0.4–1.5 pickled it (Python 2's
    /// `OrderedDict.__reduce__`), `OrderedDict([[key, value], ...])`.
    fn ordered_dict(&self, args: &[Id]) -> Result<Obj> {
        let Some(&items) = args.first() else {
            return Ok(Obj::Dict(Vec::new()));
        };
        let mut pairs = Vec::new();
        for item in self.sequence(Some(items))? {
            match &self.arena[item] {
                Obj::List(kv) | Obj::Tuple(kv) if kv.len() == 2 => pairs.push((kv[0], kv[1])),
                _ => return Err(self.err("OrderedDict built from something other than pairs")),
            }
        }
        Ok(Obj::Dict(pairs))
    }

    /// The items of a list or tuple argument (none when absent).
    fn sequence(&self, id: Option<Id>) -> Result<Vec<Id>> {
        match id.map(|a| &self.arena[a]) {
            None => Ok(Vec::new()),
            Some(Obj::Tuple(items)) | Some(Obj::List(items)) => {
                self.charge(items.len() * std::mem::size_of::<Id>())?;
                Ok(items.clone())
            }
            _ => Err(self.err("a sequence is built from something that is not a list or tuple")),
        }
    }

    fn device(&self, args: &[Id]) -> Result<Obj> {
        let mut parts = Vec::with_capacity(args.len());
        for &a in args {
            let part = match &self.arena[a] {
                Obj::Str(s) => {
                    self.charge(s.len())?;
                    s.clone()
                }
                Obj::Int(i) => i.to_string(),
                _ => {
                    return Err(
                        self.err("torch.device with an argument that is not a string or index")
                    )
                }
            };
            parts.push(part);
        }
        Ok(Obj::Str(parts.join(":")))
    }

    fn encode(&self, args: &[Id]) -> Result<Obj> {
        let text = self.as_str(
            *args
                .first()
                .ok_or_else(|| self.err("_codecs.encode without text"))?,
        )?;
        self.charge(text.len())?;
        let bytes = text
            .chars()
            .map(|c| u8::try_from(c as u32).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| self.err("_codecs.encode text is not latin-1"))?;
        Ok(Obj::Bytes(bytes))
    }

    /// `numpy.core.multiarray.scalar(dtype, bytes)`: a number, when the
    /// dtype is a numeric one ckpt knows.
    fn np_scalar(&self, args: &[Id]) -> Result<Option<Obj>> {
        let [dtype, data, ..] = args[..] else {
            return Err(self.err("numpy scalar without a dtype and bytes"));
        };
        let Obj::NpDtype { code, big_endian } = &self.arena[dtype] else {
            return Err(self.err("numpy scalar whose dtype is not a numpy.dtype"));
        };
        let Obj::Bytes(raw) = &self.arena[data] else {
            return Ok(None);
        };
        let Some(dtype) = numpy_dtype(code) else {
            return Ok(None);
        };
        if raw.len() != dtype.size() || matches!(dtype, DType::C64 | DType::C128) {
            return Ok(None);
        }
        let mut raw = raw.clone();
        if *big_endian {
            raw.reverse();
        }
        Ok(Some(match dtype {
            DType::Bool => Obj::Bool(raw[0] != 0),
            DType::U64 => {
                match i64::try_from(u64::from_le_bytes(raw[..8].try_into().unwrap_or_default())) {
                    Ok(v) => Obj::Int(v),
                    Err(_) => return Ok(None),
                }
            }
            DType::I64 => Obj::Int(i64::from_le_bytes(raw[..8].try_into().unwrap_or_default())),
            d if d.is_float() => Obj::Float(d.decode_f64(&raw)),
            // Every other integer type is exact through f64.
            d => Obj::Int(d.decode_f64(&raw) as i64),
        }))
    }

    /// `PosixPath(*parts)`: the path as text.
    fn path_parts(&self, args: &[Id]) -> Result<String> {
        let mut text = String::new();
        for &a in args {
            let part = self.as_str(a)?;
            self.charge(part.len() + 1)?;
            if !text.is_empty() && !text.ends_with('/') {
                text.push('/');
            }
            text.push_str(part);
        }
        Ok(text)
    }

    /// `datetime(bytes)` / `date(bytes)` (Python's compact state) as ISO
    /// 8601 text; `None` for any other form.
    fn date(&self, state: Id) -> Result<Option<String>> {
        let Obj::Bytes(b) = &self.arena[state] else {
            return Ok(None);
        };
        let year = u16::from_be_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ]);
        Ok(match b.len() {
            4 => Some(format!("{year:04}-{:02}-{:02}", b[2], b[3])),
            10 => {
                let micros = u32::from_be_bytes([0, b[7], b[8], b[9]]);
                Some(format!(
                    "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}",
                    b[2], b[3], b[4], b[5], b[6]
                ))
            }
            _ => None,
        })
    }

    pub(super) fn rebuild_tensor(&self, args: &[Id], dtype: Option<DType>) -> Result<TensorRef> {
        let [storage, offset, size, stride, ..] = args[..] else {
            return Err(self.err("a tensor is rebuilt with too few arguments"));
        };
        let Obj::Storage(storage) = &self.arena[storage] else {
            return Err(self.err("a tensor's storage is not a persistent id"));
        };
        let dtype = match (dtype, storage.dtype) {
            (Some(d), _) | (None, Some(d)) => d,
            (None, None) => return Err(self.err("an untyped storage without a dtype")),
        };
        let offset = u64::try_from(self.as_int(offset)?)
            .map_err(|_| self.err("a storage offset is negative"))?;
        let shape = self.dims(size)?;
        let stride = self.dims(stride)?;
        if shape.len() != stride.len() {
            return Err(self.err("a tensor's size and stride differ in length"));
        }
        self.charge(storage.key.len())?;
        Ok(TensorRef {
            storage: super::StorageRef::clone(storage),
            dtype,
            offset,
            shape,
            stride,
        })
    }
}

impl Machine<'_> {
    /// A protocol-5 NumPy array as the array `_reconstruct` + `BUILD`
    /// would describe (`(version, shape, dtype, fortran_order, bytes)`);
    /// anything else an inert object.
    fn frombuffer(&mut self, args: &[Id], module: String, name: String, args_id: Id) -> Obj {
        let &[buffer, dtype, shape, order] = args else {
            return self.object(module, name, args_id);
        };
        let fortran = match &self.arena[order] {
            Obj::Str(o) if o == "C" || o == "F" => o == "F",
            _ => return self.object(module, name, args_id),
        };
        if !matches!(self.arena[buffer], Obj::Bytes(_))
            || !matches!(self.arena[dtype], Obj::NpDtype { .. })
            || !matches!(self.arena[shape], Obj::Tuple(_))
        {
            return self.object(module, name, args_id);
        }
        let version = self.alloc(Obj::Int(1));
        let fortran = self.alloc(Obj::Bool(fortran));
        let state = self.alloc(Obj::Tuple(vec![version, shape, dtype, fortran, buffer]));
        Obj::NdArray { state: Some(state) }
    }

    /// `_rebuild_qtensor(storage, offset, size, stride, quantizer_params,
    /// requires_grad, backward_hooks)`: the integer view and its qscheme.
    fn rebuild_qtensor(&self, args: &[Id]) -> Result<Obj> {
        let int = self.rebuild_tensor(args, None)?;
        if !matches!(int.dtype, DType::I8 | DType::U8 | DType::I32) {
            return Err(self.err(
                "a quantized tensor whose storage is not QInt8, QUInt8 or QInt32 (packed 4- and 2-bit storages are not read)",
            ));
        }
        let params = self.tuple(
            *args
                .get(4)
                .ok_or_else(|| self.err("_rebuild_qtensor without quantizer parameters"))?,
        )?;
        let scheme = match (params.first().and_then(|&p| self.global_name(p)), &params[..]) {
            (Some(("torch", "per_tensor_affine")), &[_, scale, zero_point]) => QScheme::PerTensor {
                scale: self.as_float(scale)?,
                zero_point: self.as_int(zero_point)?,
            },
            (
                Some(("torch", "per_channel_affine" | "per_channel_affine_float_qparams")),
                &[_, scales, zero_points, axis],
            ) => {
                let axis = usize::try_from(self.as_int(axis)?)
                    .ok()
                    .filter(|&a| a < int.shape.len())
                    .ok_or_else(|| self.err("a quantized tensor's axis is not one of its dimensions"))?;
                let channels = int.shape[axis];
                for t in [scales, zero_points] {
                    match &self.arena[t] {
                        Obj::Tensor(t) if t.shape == [channels] => {}
                        _ => {
                            return Err(self.err(
                                "a quantized tensor's scales or zero points are not one per channel",
                            ))
                        }
                    }
                }
                QScheme::PerChannel {
                    scales,
                    zero_points,
                    axis,
                }
            }
            _ => {
                return Err(self.err(
                    "a quantized tensor with a qscheme ckpt does not read (per_tensor_affine, per_channel_affine and per_channel_affine_float_qparams are read)",
                ))
            }
        };
        Ok(Obj::QTensor(Box::new(int), Box::new(scheme)))
    }
}

/// The dtype of a NumPy type code (`f8`, `i4`, `u1`, `b1`, `c8`).
pub(crate) fn numpy_dtype(code: &str) -> Option<DType> {
    DType::from_numpy(&format!("<{code}")).or_else(|| DType::from_numpy(&format!("|{code}")))
}
