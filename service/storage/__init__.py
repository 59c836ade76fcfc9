"""Storage: the SQL job store and its migrations, content-addressed artifacts, garbage
collection, atomic writes and delivery into game repositories."""
