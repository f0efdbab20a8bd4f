//! Fuzz target: see [`herald_fuzz::cursor`].

fn main() {
    afl::fuzz!(|data: &[u8]| herald_fuzz::cursor(data));
}
