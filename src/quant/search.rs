//! Scale-search helpers shared by the K-quants and the imatrix legacy quantizers (being written).
