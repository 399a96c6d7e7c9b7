//! Mixture-of-experts checkpoints: how a family stores its experts (one 2-D tensor per expert
//! and projection) and how the converter stacks them into one 3-D tensor per layer and
//! projection (the `_experts` buffers of `LlamaModel.modify_tensors` in conversion/llama.py and
//! `Qwen2MoeModel.modify_tensors` in conversion/qwen.py).
//!
//! Each family file declares its [`ExpertLayout`]; [`Architecture::experts`] finds it through
//! the table here, so families without experts need no entry.

use super::{mixtral, qwen2moe, qwen3moe, Architecture};

/// How one family's checkpoints store experts and how the converter stacks them.
#[derive(Debug)]
pub struct ExpertLayout {
    /// config.json keys of the expert count, first present wins (`find_hparam`).
    pub count_keys: &'static [&'static str],
    /// config.json keys of the experts used per token; llama.cpp refuses a MoE model without
    /// the count.
    pub used_count_keys: &'static [&'static str],
    /// A checkpoint name containing this is a per-expert tensor (the converter's `find`).
    pub marker: &'static str,
    /// The per-expert checkpoint name, `{bid}`, `{xid}` and `{proj}` filled in.
    pub expert_name: &'static str,
    /// Projections in the order the converter emits their stacked tensors.
    pub projections: &'static [&'static str],
    /// The name the converter gives the stacked tensor before mapping it to GGUF, `{bid}` and
    /// `{proj}` filled in.
    pub stacked_name: &'static str,
    /// config.json keys of the expert feed-forward width (rows of gate/up, columns of down).
    pub ff_keys: &'static [&'static str],
    /// The projection whose expert matrices are `[hidden, ff]` rather than `[ff, hidden]`.
    pub down_projection: &'static str,
}

impl ExpertLayout {
    /// The checkpoint name of expert `xid`'s `proj` in layer `bid`.
    pub fn expert_tensor(&self, bid: usize, xid: usize, proj: &str) -> String {
        self.expert_name
            .replace("{bid}", &bid.to_string())
            .replace("{xid}", &xid.to_string())
            .replace("{proj}", proj)
    }

    /// The name of the stacked `proj` tensor of layer `bid`, as the converter maps it.
    pub fn stacked_tensor(&self, bid: usize, proj: &str) -> String {
        self.stacked_name
            .replace("{bid}", &bid.to_string())
            .replace("{proj}", proj)
    }

    /// `(expert, projection)` of a per-expert checkpoint name of layer `bid`, if it is one.
    pub fn parse(&self, bid: usize, name: &str) -> Option<(usize, &'static str)> {
        let (head, tail) = self.expert_name.split_once("{xid}")?;
        let head = head.replace("{bid}", &bid.to_string());
        let rest = name.strip_prefix(head.as_str())?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let xid: usize = rest[..digits].parse().ok()?;
        let rest = &rest[digits..];
        self.projections
            .iter()
            .copied()
            .find(|p| rest == tail.replace("{proj}", p))
            .map(|p| (xid, p))
    }
}

/// The families with experts, by the first Hugging Face class they list.
const LAYOUTS: &[(&str, &ExpertLayout)] = &[
    (mixtral::MIXTRAL.hf_classes[0], &mixtral::EXPERTS),
    (qwen2moe::QWEN2MOE.hf_classes[0], &qwen2moe::EXPERTS),
    (qwen3moe::QWEN3MOE.hf_classes[0], &qwen2moe::EXPERTS),
];

impl Architecture {
    /// How this family's checkpoints store experts; `None` for dense families.
    pub fn experts(&self) -> Option<&'static ExpertLayout> {
        let first = self.hf_classes.first()?;
        LAYOUTS
            .iter()
            .find(|(class, _)| class == first)
            .map(|(_, l)| *l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let l = &mixtral::EXPERTS;
        let n = l.expert_tensor(3, 11, "w2");
        assert_eq!(n, "model.layers.3.block_sparse_moe.experts.11.w2.weight");
        assert_eq!(l.parse(3, &n), Some((11, "w2")));
        assert_eq!(l.parse(4, &n), None);
        assert_eq!(
            l.parse(3, "model.layers.3.block_sparse_moe.experts.1.w4.weight"),
            None
        );
        let q = &qwen2moe::EXPERTS;
        assert_eq!(
            q.parse(0, "model.layers.0.mlp.experts.5.down_proj.weight"),
            Some((5, "down_proj"))
        );
        assert_eq!(
            q.stacked_tensor(1, "up_proj"),
            "model.layers.1.mlp.experts.up_proj.weight"
        );
    }

    #[test]
    fn only_moe_families_have_layouts() {
        assert!(crate::arch::llama::LLAMA.experts().is_none());
        assert!(mixtral::MIXTRAL.experts().is_some());
        assert!(qwen3moe::QWEN3MOE.experts().is_some());
    }
}
