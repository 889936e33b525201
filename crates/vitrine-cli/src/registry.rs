//! Every model family this build knows: the one list to extend when a family is added.

use vitrine_core::family::Family;

/// The families, by the `task` their configs name.
pub const FAMILIES: &[&dyn Family] =
    &[&vitrine_image::ImageFamily, &vitrine_text::TextFamily, &vitrine_generation::GenerationFamily, &vitrine_recommend::RecommendFamily];
