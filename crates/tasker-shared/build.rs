// `sqlx::migrate!` embeds the migrations; without this a newly added file would not trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
