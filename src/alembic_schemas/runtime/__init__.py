"""How one schema is migrated in-process: the schema's transaction set-up (:mod:`.schema`),
``autocommit_block`` inside it (:mod:`.autocommit`), and every use of a private Alembic or
SQLAlchemy name (:mod:`.compat`)."""
