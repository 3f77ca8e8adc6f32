"""Signs: packed sign bits, exact Hamming search, and the sign cache with its typed metadata."""
