-- The answer journal lives beside the Dagster instance, in a database of its own.
CREATE DATABASE ai_assets;
