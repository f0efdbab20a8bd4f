//! Fuzz target: see [`herald_fuzz::publish`].

fn main() {
    afl::fuzz!(|data: &[u8]| herald_fuzz::publish(data));
}
