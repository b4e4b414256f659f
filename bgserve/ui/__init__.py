"""The web dashboard at ``/ui``: server-rendered HTML, a small script that refreshes the
live parts every two seconds, and actions for the roles that may take them."""
