from kokan.cli import main

main()
