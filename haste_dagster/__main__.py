from haste_dagster.cli import main

main()
