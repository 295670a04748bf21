"""Pages of the Streamlit app beside the main one (Streamlit lists every script here in the sidebar)."""
