"""HTTP layer: routes translate HTTP into calls on the inference layer, and errors back."""
