//! A restricted unpickler: reads the pickle programs `torch.save` writes for state dicts and
//! nothing more.
//!
//! Python's `pickle` lets a file name any importable callable (`GLOBAL`) and call it (`REDUCE`),
//! which is how a checkpoint can run code on load. This reader never calls anything: a global
//! outside [`ALLOWED_GLOBALS`] stops the read with [`PickleError::ForbiddenGlobal`] the moment
//! its opcode is seen, and the few allowed ones are interpreted as data (an empty dict, a tensor
//! view of a storage). Opcodes that only build objects by calling classes (`NEWOBJ`, `INST`,
//! `OBJ`, `EXT*`) are refused too.

use std::path::{Path, PathBuf};

/// Errors of the unpickler; each names the file (and the offending global or opcode).
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The pickle names a global (a callable or class) outside the allow-list.
    #[error("{path}: pickle global '{module}.{name}' is not allowed (a checkpoint may only hold tensors; refusing to load it)")]
    ForbiddenGlobal {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// The module the global lives in.
        module: String,
        /// Its name.
        name: String,
    },
    /// An opcode this reader does not interpret.
    #[error("{path}: pickle opcode 0x{opcode:02x} at byte {offset} is not supported")]
    UnsupportedOpcode {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// The pickle opcode.
        opcode: u8,
        /// Byte offset in the file.
        offset: usize,
    },
    /// The program is malformed: truncated, stack underflow, bad memo index, wrong argument.
    #[error("{path}: malformed pickle at byte {offset}: {what}")]
    Malformed {
        /// The file (or directory) concerned.
        path: PathBuf,
        /// Byte offset in the file.
        offset: usize,
        /// What is wrong.
        what: String,
    },
}

/// The globals a state dict needs, as (module, name). Everything else is refused.
pub const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "DoubleStorage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
];

/// An allowed global, as data.
#[derive(Clone, Debug, PartialEq)]
pub enum Global {
    /// `collections.OrderedDict`: called with no arguments it is an empty dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`: the tensor itself.
    RebuildParameter,
    /// A typed storage class such as `torch.HalfStorage` (its name).
    Storage(&'static str),
}

/// A view of a storage, as `_rebuild_tensor_v2` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    /// The storage class name (`HalfStorage`, …).
    pub storage_type: &'static str,
    /// The storage's record key inside the archive (`data/<key>`).
    pub key: String,
    /// Elements in the storage.
    pub storage_numel: u64,
    /// Offset of the first element, in elements.
    pub offset: u64,
    /// Shape, outermost first.
    pub size: Vec<u64>,
    /// Strides in elements.
    pub stride: Vec<u64>,
}

/// A value of the restricted object model.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Python's None.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A bytes object.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// Key/value pairs in insertion order (a later set of an existing key replaces its value).
    Dict(Vec<(Value, Value)>),
    /// An allowed global not yet called.
    Global(Global),
    /// A storage named by a persistent id: `('storage', type, key, location, numel)`.
    Storage {
        /// The torch storage class, e.g. `FloatStorage`.
        storage_type: &'static str,
        /// The metadata key.
        key: String,
        /// Elements in the storage.
        numel: u64,
    },
    /// A tensor rebuilt from a storage.
    Tensor(TensorRef),
}

/// Deepest nesting of containers a pickle may build (a state dict needs about 5); bounds the
/// recursion of dropping and comparing values.
const MAX_DEPTH: u32 = 100;

/// Most values that memo writes, memo reads and DUP may copy in one pickle (each copy is deep;
/// a state dict copies about 20 per tensor): bounds the work and memory of a pickle that doubles
/// a structure again and again.
const MAX_COPIED: u64 = 1 << 22;

/// A stack entry: a MARK, or a value with its nesting depth.
enum Slot {
    Mark,
    Val(Value, u32),
}

/// Values in `v` (itself included), counting at most to `limit`; iterative, so deep values
/// cannot overflow the stack.
fn count_values(v: &Value, limit: u64) -> u64 {
    let mut n = 0u64;
    let mut todo = vec![v];
    while let Some(x) = todo.pop() {
        n += 1;
        if n > limit {
            break;
        }
        match x {
            Value::Tuple(items) | Value::List(items) => todo.extend(items.iter()),
            Value::Dict(pairs) => {
                for (k, v) in pairs {
                    todo.push(k);
                    todo.push(v);
                }
            }
            _ => {}
        }
    }
    n
}

struct Machine<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: Vec<Option<(Value, u32)>>,
    /// Values copied so far by memo reads and DUP.
    copied: u64,
}

/// Run the pickle program `data` (read from `path`, named in errors) and return its result.
pub fn unpickle(path: &Path, data: &[u8]) -> Result<Value, PickleError> {
    let mut m = Machine {
        path,
        data,
        pos: 0,
        stack: Vec::new(),
        memo: Vec::new(),
        copied: 0,
    };
    m.run()
}

fn allowed(module: &str, name: &str) -> Option<Global> {
    let (_, n) = ALLOWED_GLOBALS
        .iter()
        .find(|(m, n)| *m == module && *n == name)?;
    Some(match (module, *n) {
        ("collections", _) => Global::OrderedDict,
        (_, "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        (_, "_rebuild_parameter") => Global::RebuildParameter,
        (_, storage) => Global::Storage(storage),
    })
}

impl<'a> Machine<'a> {
    fn bad(&self, what: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            path: self.path.to_path_buf(),
            offset: self.pos,
            what: what.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.bad("truncated"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.bad("unterminated line"))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| self.bad("line is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<String, PickleError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("string is not UTF-8"))
    }

    /// Push a scalar or an empty container.
    fn push(&mut self, v: Value) {
        self.stack.push(Slot::Val(v, 1));
    }

    /// Push a value whose contents are `depth` deep.
    fn push_at(&mut self, v: Value, depth: u32) -> Result<(), PickleError> {
        if depth > MAX_DEPTH {
            return Err(self.bad(format!("values nested deeper than {MAX_DEPTH}")));
        }
        self.stack.push(Slot::Val(v, depth));
        Ok(())
    }

    fn pop_with_depth(&mut self) -> Result<(Value, u32), PickleError> {
        match self.stack.pop() {
            Some(Slot::Val(v, d)) => Ok((v, d)),
            Some(Slot::Mark) => Err(self.bad("unexpected MARK on the stack")),
            None => Err(self.bad("stack underflow")),
        }
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        self.pop_with_depth().map(|(v, _)| v)
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        self.top_with_depth().map(|(v, _)| v)
    }

    fn top_with_depth(&mut self) -> Result<(&mut Value, &mut u32), PickleError> {
        let offset = self.pos;
        match self.stack.last_mut() {
            Some(Slot::Val(v, d)) => Ok((v, d)),
            _ => Err(PickleError::Malformed {
                path: self.path.to_path_buf(),
                offset,
                what: "no value on the stack".into(),
            }),
        }
    }

    /// Everything above the topmost MARK (which is removed), and the deepest of it.
    fn pop_mark(&mut self) -> Result<(Vec<Value>, u32), PickleError> {
        let at = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| self.bad("no MARK on the stack"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        let mut depth = 0;
        let values = items
            .into_iter()
            .map(|s| match s {
                Slot::Val(v, d) => {
                    depth = depth.max(d);
                    v
                }
                Slot::Mark => unreachable!("rposition found the topmost mark"),
            })
            .collect();
        Ok((values, depth))
    }

    fn memo_put(&mut self, idx: usize) -> Result<(), PickleError> {
        if idx > self.data.len() {
            return Err(self.bad(format!("memo index {idx} out of range")));
        }
        let (v, d) = match self.stack.last() {
            Some(Slot::Val(v, d)) => (v, *d),
            _ => return Err(self.bad("no value on the stack")),
        };
        // Storing shares nothing in this object model: it is a copy.
        let left = MAX_COPIED.saturating_sub(self.copied);
        let n = count_values(v, left);
        if n > left {
            return Err(self.bad(format!(
                "copies more than {MAX_COPIED} values (a pickle bomb?)"
            )));
        }
        self.copied += n;
        let v = v.clone();
        if self.memo.len() <= idx {
            self.memo.resize(idx + 1, None);
        }
        self.memo[idx] = Some((v, d));
        Ok(())
    }

    fn memo_get(&mut self, idx: usize) -> Result<(), PickleError> {
        let Some(Some((v, d))) = self.memo.get(idx) else {
            return Err(self.bad(format!("memo index {idx} was never set")));
        };
        let left = MAX_COPIED.saturating_sub(self.copied);
        let n = count_values(v, left);
        if n > left {
            return Err(self.bad(format!(
                "copies more than {MAX_COPIED} values (a pickle bomb?)"
            )));
        }
        self.copied += n;
        let (v, d) = (v.clone(), *d);
        self.push_at(v, d)
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        match allowed(module, name) {
            Some(g) => {
                self.push(Value::Global(g));
                Ok(())
            }
            None => Err(PickleError::ForbiddenGlobal {
                path: self.path.to_path_buf(),
                module: module.to_string(),
                name: name.to_string(),
            }),
        }
    }

    fn set_items(&mut self, pairs: Vec<Value>, items_depth: u32) -> Result<(), PickleError> {
        if !pairs.len().is_multiple_of(2) {
            return Err(self.bad("odd number of items for a dict"));
        }
        let (_, depth) = self.top_with_depth()?;
        *depth = (*depth).max(items_depth + 1);
        if *depth > MAX_DEPTH {
            return Err(self.bad(format!("values nested deeper than {MAX_DEPTH}")));
        }
        let Value::Dict(dict) = self.top()? else {
            return Err(self.bad("SETITEM(S) on a value that is not a dict"));
        };
        let mut it = pairs.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match dict.iter_mut().find(|(dk, _)| *dk == k) {
                Some(slot) => slot.1 = v,
                None => dict.push((k, v)),
            }
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>, items_depth: u32) -> Result<(), PickleError> {
        let (_, depth) = self.top_with_depth()?;
        *depth = (*depth).max(items_depth + 1);
        if *depth > MAX_DEPTH {
            return Err(self.bad(format!("values nested deeper than {MAX_DEPTH}")));
        }
        match self.top()? {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err(self.bad("APPEND(S) on a value that is not a list")),
        }
    }

    /// `REDUCE`: call an allowed global with its arguments, as data.
    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Tuple(args) = args else {
            return Err(self.bad("REDUCE arguments are not a tuple"));
        };
        let g = match callable {
            Value::Global(g) => g,
            _ => return Err(self.bad("REDUCE on a value that is not an allowed global")),
        };
        match g {
            Global::OrderedDict => {
                if !args.is_empty() {
                    return Err(self.bad("OrderedDict called with arguments"));
                }
                Ok(Value::Dict(Vec::new()))
            }
            Global::RebuildParameter => match args.into_iter().next() {
                Some(t @ Value::Tensor(_)) => Ok(t),
                _ => Err(self.bad("_rebuild_parameter without a tensor")),
            },
            Global::RebuildTensorV2 => {
                if args.len() < 4 {
                    return Err(self.bad("_rebuild_tensor_v2 with fewer than 4 arguments"));
                }
                let mut it = args.into_iter();
                let storage = it.next().unwrap();
                let offset = it.next().unwrap();
                let size = it.next().unwrap();
                let stride = it.next().unwrap();
                let Value::Storage {
                    storage_type,
                    key,
                    numel,
                } = storage
                else {
                    return Err(self.bad("_rebuild_tensor_v2's first argument is not a storage"));
                };
                let ints = |v: Value, what: &str| -> Result<Vec<u64>, PickleError> {
                    match v {
                        Value::Tuple(items) => items
                            .into_iter()
                            .map(|x| match x {
                                Value::Int(i) if i >= 0 => Ok(i as u64),
                                _ => Err(self.bad(format!("{what} holds a non-integer"))),
                            })
                            .collect(),
                        _ => Err(self.bad(format!("{what} is not a tuple"))),
                    }
                };
                let offset = match offset {
                    Value::Int(i) if i >= 0 => i as u64,
                    _ => return Err(self.bad("storage offset is not an integer")),
                };
                let size = ints(size, "tensor size")?;
                let stride = ints(stride, "tensor stride")?;
                if size.len() != stride.len() {
                    return Err(self.bad("tensor size and stride differ in length"));
                }
                Ok(Value::Tensor(TensorRef {
                    storage_type,
                    key,
                    storage_numel: numel,
                    offset,
                    size,
                    stride,
                }))
            }
            Global::Storage(name) => Err(self.bad(format!("storage class {name} called directly"))),
        }
    }

    fn persistent_load(&mut self, pid: Value) -> Result<Value, PickleError> {
        let Value::Tuple(items) = pid else {
            return Err(self.bad("persistent id is not a tuple"));
        };
        match items.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(st)), Value::Str(key), _location, Value::Int(numel)]
                if tag == "storage" && *numel >= 0 =>
            {
                Ok(Value::Storage {
                    storage_type: st,
                    key: key.clone(),
                    numel: *numel as u64,
                })
            }
            _ => Err(self.bad("persistent id is not ('storage', type, key, location, numel)")),
        }
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.bad(format!("pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.stack.push(Slot::Mark),
                b'}' => self.push(Value::Dict(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b')' => self.push(Value::Tuple(Vec::new())),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64));
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(self.bad("integer wider than 64 bits"));
                    }
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.push(Value::Int(v));
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.push(Value::Float(f64::from_be_bytes(b.try_into().unwrap())));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s));
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| self.bad("huge string"))?;
                    let s = self.string(n)?;
                    self.push(Value::Str(s));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                b'q' => {
                    let i = self.u8()? as usize;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()? as usize;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len();
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as usize;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()? as usize;
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                        _ => return Err(self.bad("STACK_GLOBAL operands are not strings")),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v);
                }
                b't' => {
                    let (items, d) = self.pop_mark()?;
                    self.push_at(Value::Tuple(items), d + 1)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    let mut depth = 0;
                    for _ in 0..n {
                        let (v, d) = self.pop_with_depth()?;
                        depth = depth.max(d);
                        items.push(v);
                    }
                    items.reverse();
                    self.push_at(Value::Tuple(items), depth + 1)?;
                }
                b'l' => {
                    let (items, d) = self.pop_mark()?;
                    self.push_at(Value::List(items), d + 1)?;
                }
                b'd' => {
                    let (items, d) = self.pop_mark()?;
                    self.push(Value::Dict(Vec::new()));
                    self.set_items(items, d)?;
                }
                b's' => {
                    let (v, dv) = self.pop_with_depth()?;
                    let (k, dk) = self.pop_with_depth()?;
                    self.set_items(vec![k, v], dv.max(dk))?;
                }
                b'u' => {
                    let (items, d) = self.pop_mark()?;
                    self.set_items(items, d)?;
                }
                b'a' => {
                    let (v, d) = self.pop_with_depth()?;
                    self.append(vec![v], d)?;
                }
                b'e' => {
                    let (items, d) = self.pop_mark()?;
                    self.append(items, d)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v);
                }
                b'b' => {
                    // BUILD: state for the object below. Only an OrderedDict's attributes
                    // (a state dict's `_metadata`) reach here; they carry no tensor data.
                    let _state = self.pop()?;
                    if !matches!(self.top()?, Value::Dict(_)) {
                        return Err(self.bad("BUILD on a value that is not a dict"));
                    }
                }
                0x30 => {
                    self.pop()?; // POP
                }
                0x32 => {
                    // DUP
                    let (v, d) = match self.stack.last() {
                        Some(Slot::Val(v, d)) => (v, *d),
                        _ => return Err(self.bad("DUP with no value on the stack")),
                    };
                    let left = MAX_COPIED.saturating_sub(self.copied);
                    let n = count_values(v, left);
                    if n > left {
                        return Err(self.bad(format!(
                            "copies more than {MAX_COPIED} values (a pickle bomb?)"
                        )));
                    }
                    self.copied += n;
                    let v = v.clone();
                    self.push_at(v, d)?;
                }
                b'1' => {
                    self.pop_mark()?; // POP_MARK
                }
                _ => {
                    return Err(PickleError::UnsupportedOpcode {
                        path: self.path.to_path_buf(),
                        opcode: op,
                        offset: at,
                    })
                }
            }
        }
    }
}
