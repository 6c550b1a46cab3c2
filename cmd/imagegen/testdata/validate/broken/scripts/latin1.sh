echo f
# café
