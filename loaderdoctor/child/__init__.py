"""Everything that runs inside the user's process. Imports only the shared records
(protocol, frames, errors) and itself."""
