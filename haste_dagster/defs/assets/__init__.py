"""Asset modules: per competition, skills across competitions, reports."""
