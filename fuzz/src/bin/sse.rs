//! Fuzz target: see [`herald_fuzz::sse`].

fn main() {
    afl::fuzz!(|data: &[u8]| herald_fuzz::sse(data));
}
