//! The streaming read → plan → quantize → write path.
