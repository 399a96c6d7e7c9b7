//! Checks that a Rust `#[repr(C)]` mirror of a WGSL struct has the shader's layout.
//!
//! Uniform parameter blocks cross the CPU/GPU boundary as raw bytes (`bytemuck::bytes_of`), so
//! a field added, dropped or reordered on one side only would silently shift every later field.
//! Each mirror has a compile-time size assertion next to it; the tests here parse the WGSL with
//! naga (the compiler wgpu itself uses, re-exported as `wgpu::naga`) and compare the layout the
//! shader compiler computes with `size_of` and `offset_of!` on the Rust side.
//!
//! The mirrors live in different layers (`gpu::dispatch`, `lora::gpu_merge`,
//! `runtime::gpu_forward`) and keep their fields private, so the comparison is a macro
//! (`assert_wgsl_mirror!`) each owning module invokes from its own
//! test; this module holds the WGSL side and tests for the layouts the gpu layer owns.

use wgpu::naga;

/// The layout naga computes for one WGSL struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WgslStructLayout {
    /// Size in bytes, trailing padding included (WGSL `SizeOf`).
    pub size: u32,
    /// (member name, byte offset), in declaration order.
    pub members: Vec<(String, u32)>,
}

/// Parses `source` as WGSL and returns the layout of the struct named `name`.
///
/// Panics (this is test support) when the source does not parse or has no such struct, naming
/// the struct so the failing mirror is obvious.
pub(crate) fn wgsl_struct_layout(source: &str, name: &str) -> WgslStructLayout {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("WGSL holding struct {name} does not parse: {e}"));
    let ty = module
        .types
        .iter()
        .map(|(_, ty)| ty)
        .find(|ty| ty.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no WGSL struct named {name}"));
    match &ty.inner {
        naga::TypeInner::Struct { members, span } => WgslStructLayout {
            size: *span,
            members: members
                .iter()
                .map(|m| (m.name.clone().unwrap_or_default(), m.offset))
                .collect(),
        },
        other => panic!("WGSL type {name} is not a struct: {other:?}"),
    }
}

/// Asserts that Rust type `$ty` mirrors WGSL struct `$wgsl` in `$source`: same size, and each
/// listed Rust field at the offset of the WGSL member it stands for, and every WGSL member inside
/// the span of some listed field (so a member the Rust side lacks fails, even where it fills
/// what was trailing padding).
///
/// `$field => "member"` pairs name the Rust field and the WGSL member whose offset it starts at
/// (a Rust `pad: [u32; 3]` stands for WGSL `pad0, pad1, pad2` and is listed as
/// `pad => "pad0"`).
macro_rules! assert_wgsl_mirror {
    ($ty:ty, $source:expr, $wgsl:literal, { $($field:ident => $member:literal),+ $(,)? }) => {{
        let layout = $crate::gpu::layout::wgsl_struct_layout(&$source, $wgsl);
        assert_eq!(
            std::mem::size_of::<$ty>() as u32,
            layout.size,
            "size of {} differs from WGSL struct {}",
            stringify!($ty),
            $wgsl
        );
        // (field, offset, size) of each listed Rust field.
        let listed: Vec<(&str, u32, u32)> = vec![$((
            stringify!($field),
            std::mem::offset_of!($ty, $field) as u32,
            $crate::gpu::layout::field_size(|s: &$ty| &s.$field),
        )),+];
        let members: Vec<&str> = vec![$($member),+];
        for ((field, rust_offset, _), member) in listed.iter().zip(&members) {
            let wgsl_offset = layout
                .members
                .iter()
                .find(|(m, _)| m == member)
                .unwrap_or_else(|| panic!("WGSL struct {} has no member {}", $wgsl, member))
                .1;
            assert_eq!(
                *rust_offset, wgsl_offset,
                "{}::{} is at byte {} but WGSL {}.{} is at byte {}",
                stringify!($ty), field, rust_offset, $wgsl, member, wgsl_offset
            );
        }
        // Every WGSL member must lie inside some listed field (a member inside an array field's
        // span, like `pad1` in `pad: [u32; 3]`, is part of it); one outside all of them is a
        // shader member the Rust side does not mirror.
        for (member, offset) in &layout.members {
            assert!(
                listed.iter().any(|(_, o, n)| (*o..o + n).contains(offset)),
                "WGSL {}.{} at byte {} is covered by no listed field of {}",
                $wgsl, member, offset, stringify!($ty)
            );
        }
    }};
}

pub(crate) use assert_wgsl_mirror;

/// Size in bytes of the field `get` borrows (lets the macro size a field named by identifier).
pub(crate) fn field_size<T, F>(_get: fn(&T) -> &F) -> u32 {
    std::mem::size_of::<F>() as u32
}

/// The module text `gpu::pipelines` compiles for the float kernels: the constants it prepends,
/// then io.wgsl (which declares `Params`) and the files it depends on.
pub(crate) fn kernel_params_source() -> String {
    format!(
        "const FAULT_INJECT: bool = false;\nconst OB_MAX_WORDS: u32 = 4u;\n\
         const WORK_ELEMS: u32 = 1u;\nalias Binding3 = f32;\n{}\n{}\n{}\n",
        include_str!("../../shaders/io.wgsl"),
        include_str!("../../shaders/exact.wgsl"),
        include_str!("../../shaders/float.wgsl"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper itself, on a struct whose WGSL layout has padding a naive sum would miss:
    /// vec3<f32> aligns to 16, and the struct's size rounds up to its 16-byte alignment.
    #[test]
    fn layout_follows_wgsl_alignment_rules() {
        let src = "struct S { a: f32, b: vec3<f32>, c: u32, d: vec2<u32>, }\n\
                   @group(0) @binding(0) var<uniform> s: S;\n";
        let layout = wgsl_struct_layout(src, "S");
        let offsets: Vec<u32> = layout.members.iter().map(|(_, o)| *o).collect();
        assert_eq!(offsets, vec![0, 16, 28, 32]);
        assert_eq!(layout.size, 48);
        assert_eq!(layout.members[1].0, "b");
    }

    /// A mirror with a field in the wrong place is caught (the macro is not vacuous).
    #[test]
    #[should_panic(expected = "is at byte")]
    fn swapped_mirror_is_rejected() {
        #[repr(C)]
        struct Swapped {
            b: u32,
            a: u32,
        }
        let src = "struct T { a: u32, b: u32, }\n@group(0) @binding(0) var<uniform> t: T;\n";
        assert_wgsl_mirror!(Swapped, src, "T", { a => "a", b => "b" });
    }

    /// (name, type) of each field of `struct NAME { ... }` in Rust source text.
    fn rust_fields(source: &str, name: &str) -> Vec<(String, String)> {
        let start = source
            .find(&format!("struct {name} {{"))
            .unwrap_or_else(|| panic!("no Rust struct {name}"));
        let body = &source[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
        body.lines()
            .map(|l| l.trim().trim_end_matches(','))
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .map(|l| {
                let (n, t) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("field line {l:?}"));
                (n.trim().to_string(), t.trim().to_string())
            })
            .collect()
    }

    /// A shader member the mirror does not list is caught even when the sizes agree.
    #[test]
    #[should_panic(expected = "covered by no listed field")]
    fn unlisted_member_is_rejected() {
        #[repr(C)]
        struct Short {
            a: u32,
            b: u32,
            _pad: [u32; 2],
        }
        let src = "struct U { a: u32, b: u32, c: u32, d: u32, }\n\
                   @group(0) @binding(0) var<uniform> u: U;\n";
        assert_wgsl_mirror!(Short, src, "U", { a => "a", b => "b" });
    }

    /// The forward-pass parameter blocks (`Step`, `Call` in shaders/forward.wgsl) are mirrored
    /// by `StepParams`/`CallParams` in `runtime::gpu_forward`, whose fields are private to that
    /// layer (a size assertion sits next to each). Checked from here on source text: the
    /// shader's members are 4-byte scalars densely packed in declaration order, and the Rust
    /// mirror declares the same names in the same order, each a u32 or f32 — so its
    /// `#[repr(C)]` layout is the shader's.
    #[test]
    fn forward_params_mirror_the_shader() {
        let wgsl = include_str!("../../shaders/forward.wgsl");
        let rust = include_str!("../runtime/gpu_forward.rs");
        for (wgsl_name, rust_name) in [("Step", "StepParams"), ("Call", "CallParams")] {
            let layout = wgsl_struct_layout(wgsl, wgsl_name);
            for (i, (member, offset)) in layout.members.iter().enumerate() {
                assert_eq!(*offset, 4 * i as u32, "WGSL {wgsl_name}.{member}");
            }
            assert_eq!(
                4 * layout.members.len() as u32,
                layout.size,
                "WGSL {wgsl_name}"
            );
            let fields = rust_fields(rust, rust_name);
            let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            let members: Vec<&str> = layout.members.iter().map(|(m, _)| m.as_str()).collect();
            assert_eq!(names, members, "{rust_name} against WGSL {wgsl_name}");
            for (n, t) in &fields {
                assert!(t == "u32" || t == "f32", "{rust_name}::{n} has type {t}");
            }
            let asserted = format!("size_of::<{rust_name}>() == {});", layout.size);
            assert!(
                rust.contains(&asserted),
                "runtime/gpu_forward.rs lacks `{asserted}` next to {rust_name}"
            );
        }
    }
}
