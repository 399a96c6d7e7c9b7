//! Importance matrices in llama.cpp's GGUF and legacy `.dat` formats (being written).
