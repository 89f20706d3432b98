//! The API's answers as the console reads them: only the fields pages show.
