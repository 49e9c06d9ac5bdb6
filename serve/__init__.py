"""Everything the deployed model needs; shipped inside model.tar.gz under code/serve/."""
