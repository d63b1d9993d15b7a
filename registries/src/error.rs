#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{source_name}: {message}")]
    File {
        source_name: String,
        message: String,
    },
}
