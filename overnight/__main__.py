from overnight.cli import main

main()
