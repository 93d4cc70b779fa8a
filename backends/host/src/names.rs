//! Plugin file names: `libsnaptree_backend_<type>.so`.

const PREFIX: &str = "libsnaptree_backend_";
const SUFFIX: &str = ".so";

/// The file name of the plugin for a backend type: `libsnaptree_backend_<type>.so`.
pub fn plugin_file_name(backend_type: &str) -> String {
    format!("{PREFIX}{backend_type}{SUFFIX}")
}

/// The backend type a plugin file name stands for, if it follows the naming rule.
pub fn type_of_file_name(file_name: &str) -> Option<&str> {
    let t = file_name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    snaptree_engine::xml::domain::validate_backend_type(t)
        .ok()
        .map(|()| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(plugin_file_name("sim"), "libsnaptree_backend_sim.so");
        assert_eq!(type_of_file_name("libsnaptree_backend_sim.so"), Some("sim"));
        assert_eq!(
            type_of_file_name("libsnaptree_backend_.so"),
            None,
            "an empty type is no type"
        );
        assert_eq!(
            type_of_file_name("libsnaptree_backend_Sim.so"),
            None,
            "types are lowercase"
        );
        assert_eq!(type_of_file_name("libsnaptree_backend_sim.so.1"), None);
        assert_eq!(type_of_file_name("libother.so"), None);
    }
}
